package jspull_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/turnstile-dev/turnstile/internal/jspull"
	"github.com/turnstile-dev/turnstile/internal/testenv"
)

// lookalikes are messages a publisher may store that read, to nats.go's
// pull, as the server's statuses: no body and a Status header.
var lookalikes = []nats.Header{
	{"Status": {"400"}, "Description": {"Bad Request"}},
	{"Status": {"409"}, "Description": {"Consumer Deleted"}},
	{"Status": {"409"}, "Description": {"Leadership Change"}},
	{"Status": {"100"}, "Description": {"Idle Heartbeat"}},
	{"Status": {"404"}, "Description": {"No Messages"}, "Nats-Pending-Messages": {"500"}},
	{"Status": {"408"}, "Description": {"Request Timeout"}},
	{"Status": {"423"}, "Description": {"Nats-Pin-Id mismatch"}},
	{"Status": {"503"}},
}

// setup makes stream S (subjects s.>) with "first", the lookalikes and
// "last" stored in that order, and a durable consumer d with explicit acks.
func setup(t *testing.T, js jetstream.JetStream, cfg jetstream.ConsumerConfig) (jetstream.Consumer, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>"}}); err != nil {
		t.Fatal(err)
	}
	msgs := []*nats.Msg{{Subject: "s.x", Data: []byte("first")}}
	for _, h := range lookalikes {
		msgs = append(msgs, &nats.Msg{Subject: "s.x", Header: h})
	}
	msgs = append(msgs, &nats.Msg{Subject: "s.x", Data: []byte("last")})
	for _, m := range msgs {
		if _, err := js.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	cfg.Durable, cfg.AckPolicy = "d", jetstream.AckExplicitPolicy
	cons, err := js.CreateConsumer(ctx, "S", cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cons, len(msgs)
}

// next calls Next with a deadline: it has none of its own.
func next(t *testing.T, it *jspull.Iter) (jetstream.Msg, error) {
	t.Helper()
	type result struct {
		m   jetstream.Msg
		err error
	}
	got := make(chan result, 1)
	go func() {
		m, err := it.Next()
		got <- result{m, err}
	}()
	select {
	case r := <-got:
		return r.m, r.err
	case <-time.After(20 * time.Second):
		it.Stop()
		t.Fatal("Next returned nothing in 20 s")
		return nil, nil
	}
}

// Every stored message is a delivery, whatever its headers: in order, with
// its metadata, acked for good.
func TestStatusLookalikesAreDeliveries(t *testing.T) {
	n := testenv.StartNATS(t, testenv.NATSOptions{})
	nc, js := n.Connect(t)
	cons, count := setup(t, js, jetstream.ConsumerConfig{})
	it, err := jspull.Messages(nc, jspull.NextSubject(js, "S", "d"), jspull.Options{Batch: 4, Expiry: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer it.Stop()
	for i := range count {
		m, err := next(t, it)
		if err != nil {
			t.Fatalf("delivery %d: %v", i+1, err)
		}
		md, err := m.Metadata()
		if err != nil {
			t.Fatal(err)
		}
		if md.Sequence.Stream != uint64(i+1) || md.Sequence.Consumer != uint64(i+1) || md.Stream != "S" || md.Consumer != "d" || md.NumDelivered != 1 {
			t.Fatalf("delivery %d: metadata %+v", i+1, md)
		}
		if i > 0 && i <= len(lookalikes) && (len(m.Data()) != 0 || m.Headers().Get("Status") != lookalikes[i-1].Get("Status")) {
			t.Fatalf("delivery %d: %q %v, want the stored lookalike %v", i+1, m.Data(), m.Headers(), lookalikes[i-1])
		}
		if err := m.Ack(); err != nil {
			t.Fatal(err)
		}
		if err := m.Ack(); !errors.Is(err, jetstream.ErrMsgAlreadyAckd) {
			t.Fatalf("a second ack: %v", err)
		}
	}
	testenv.Eventually(t, 10*time.Second, "every delivery acked", func() bool {
		info, err := cons.Info(context.Background())
		return err == nil && info.AckFloor.Stream == uint64(count) && info.NumAckPending == 0 && info.NumPending == 0
	})
	// A one-off read of another consumer gets them all too.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := js.CreateConsumer(ctx, "S", jetstream.ConsumerConfig{Durable: "f", AckPolicy: jetstream.AckNonePolicy}); err != nil {
		t.Fatal(err)
	}
	got, err := jspull.Fetch(ctx, nc, jspull.NextSubject(js, "S", "f"), 100)
	if err != nil || len(got) != count {
		t.Fatalf("fetch: %d messages, %v; want %d", len(got), err, count)
	}
	if got, err := jspull.Fetch(ctx, nc, jspull.NextSubject(js, "S", "f"), 100); err != nil || len(got) != 0 {
		t.Fatalf("fetch of a consumer with nothing left: %d messages, %v", len(got), err)
	}
}

// The pin sent back is the server's (the last Nats-Pin-Id), not one a
// message was stored with: the consumer stays pinned to this pull.
func TestPinIsTheServers(t *testing.T) {
	n := testenv.StartNATS(t, testenv.NATSOptions{})
	nc, js := n.Connect(t)
	cons, count := setup(t, js, jetstream.ConsumerConfig{
		PriorityPolicy: jetstream.PriorityPolicyPinned, PriorityGroups: []string{"g"}, PinnedTTL: time.Minute})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := js.PublishMsg(ctx, &nats.Msg{Subject: "s.x", Data: []byte("forged"), Header: nats.Header{"Nats-Pin-Id": {"forged"}}}); err != nil {
		t.Fatal(err)
	}
	count++
	// Batch 2: the pull asks again many times, each with its pin.
	it, err := jspull.Messages(nc, jspull.NextSubject(js, "S", "d"), jspull.Options{Batch: 2, Expiry: 2 * time.Second, Group: "g"})
	if err != nil {
		t.Fatal(err)
	}
	defer it.Stop()
	pinned := func() string {
		info, err := cons.Info(ctx)
		if err != nil || len(info.PriorityGroups) != 1 {
			t.Fatalf("consumer info: %v", err)
		}
		return info.PriorityGroups[0].PinnedClientID
	}
	var pin string
	for i := range count + 20 {
		if i == count {
			for j := range 20 {
				if _, err := js.Publish(ctx, "s.x", fmt.Appendf(nil, "more %d", j)); err != nil {
					t.Fatal(err)
				}
			}
		}
		m, err := next(t, it)
		if err != nil {
			t.Fatalf("delivery %d: %v", i+1, err)
		}
		ids := m.Headers().Values("Nats-Pin-Id")
		if len(ids) == 0 || ids[len(ids)-1] == "forged" {
			t.Fatalf("delivery %d: pin ids %q", i+1, ids)
		}
		if i == 0 {
			pin = ids[len(ids)-1]
		} else if got := ids[len(ids)-1]; got != pin {
			t.Fatalf("delivery %d came under pin %s, the first under %s: the pull was pinned anew", i+1, got, pin)
		}
		if err := m.Ack(); err != nil {
			t.Fatal(err)
		}
	}
	if got := pinned(); got != pin {
		t.Fatalf("the consumer is pinned to %q, the pull's pin is %q", got, pin)
	}
}

// Drain hands out what was delivered, then ends; Stop ends at once; a
// deleted consumer and a closed connection end the pull with their errors.
func TestEnds(t *testing.T) {
	n := testenv.StartNATS(t, testenv.NATSOptions{})
	nc, js := n.Connect(t)
	_, count := setup(t, js, jetstream.ConsumerConfig{})
	subject := jspull.NextSubject(js, "S", "d")

	it, err := jspull.Messages(nc, subject, jspull.Options{Batch: 100, Expiry: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := next(t, it); err != nil {
		t.Fatal(err)
	}
	// The rest was asked for with the first: wait until it is all here
	// (the consumer's info counts what is still on its way, which the
	// drain's unsubscribe would drop). At least: an idle heartbeat may be
	// held too, sent after the deliveries (all were stored before the
	// request, and go out in order).
	testenv.Eventually(t, 10*time.Second, "everything received", func() bool {
		return jspull.Held(it) >= count-1
	})
	it.Drain()
	for i := 1; ; i++ {
		m, err := next(t, it)
		if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
			if i != count {
				t.Fatalf("drained after %d deliveries, %d were delivered", i, count)
			}
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if md, _ := m.Metadata(); md.Sequence.Stream != uint64(i+1) {
			t.Fatalf("delivery %d of the drain is stream sequence %d", i+1, md.Sequence.Stream)
		}
	}

	it, err = jspull.Messages(nc, subject, jspull.Options{Expiry: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	it.Stop()
	if _, err := next(t, it); !errors.Is(err, jetstream.ErrMsgIteratorClosed) {
		t.Fatalf("Next after Stop: %v", err)
	}

	// A consumer of its own, which no earlier pull has asked.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	other, err := js.CreateConsumer(ctx, "S", jetstream.ConsumerConfig{Durable: "e", AckPolicy: jetstream.AckExplicitPolicy,
		DeliverPolicy: jetstream.DeliverNewPolicy})
	if err != nil {
		t.Fatal(err)
	}
	it, err = jspull.Messages(nc, jspull.NextSubject(js, "S", "e"), jspull.Options{Expiry: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ended := make(chan error, 1)
	go func() {
		for {
			if _, err := it.Next(); err != nil && !errors.Is(err, jetstream.ErrNoHeartbeat) {
				ended <- err
				return
			}
		}
	}()
	// Deleted under a waiting pull (before it, the pull's request finds
	// no one to answer: 503).
	testenv.Eventually(t, 10*time.Second, "a pull waiting", func() bool {
		info, err := other.Info(ctx)
		return err == nil && info.NumWaiting > 0
	})
	if err := js.DeleteConsumer(ctx, "S", "e"); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-ended:
		if !errors.Is(err, jetstream.ErrConsumerDeleted) {
			t.Fatalf("the consumer deleted: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("the pull did not end when its consumer was deleted")
	}
	if _, err := it.Next(); !errors.Is(err, jetstream.ErrMsgIteratorClosed) {
		t.Fatalf("Next after the consumer was deleted: %v", err)
	}

	if _, err := js.CreateConsumer(ctx, "S", jetstream.ConsumerConfig{Durable: "c", AckPolicy: jetstream.AckExplicitPolicy}); err != nil {
		t.Fatal(err)
	}
	it, err = jspull.Messages(nc, jspull.NextSubject(js, "S", "c"), jspull.Options{Expiry: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := next(t, it); err != nil {
		t.Fatal(err)
	}
	nc.Close()
	for {
		_, err := next(t, it)
		if errors.Is(err, jetstream.ErrConnectionClosed) && errors.Is(err, jetstream.ErrMsgIteratorClosed) {
			break
		}
		if err == nil {
			continue // delivered before the close
		}
		t.Fatalf("Next after the connection closed: %v", err)
	}
}

// After the server restarts, the pull asks again and goes on.
func TestReconnect(t *testing.T) {
	start, stop, nc, js := restartable(t)
	setup(t, js, jetstream.ConsumerConfig{})
	// Expiry a minute: without asking again after the reconnect, the
	// pull would wait for the missed heartbeats (30 s) to.
	it, err := jspull.Messages(nc, jspull.NextSubject(js, "S", "d"), jspull.Options{Batch: 1, Expiry: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer it.Stop()
	m, err := next(t, it)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Ack(); err != nil {
		t.Fatal(err)
	}
	stop()
	start()
	m, err = next(t, it)
	if err != nil {
		t.Fatal(err)
	}
	if md, _ := m.Metadata(); md.Sequence.Stream != 2 {
		t.Fatalf("after the restart: stream sequence %d, want 2", md.Sequence.Stream)
	}
}

// restartable runs a nats-server that stop and start bring down and up
// again on its port and store, until the test ends, and connects to it
// with a connection that reconnects for ever.
func restartable(t *testing.T) (start, stop func(), nc *nats.Conn, js jetstream.JetStream) {
	t.Helper()
	opts := &server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, JetStream: true, StoreDir: t.TempDir(), NoSigs: true, NoLog: true}
	var s *server.Server
	start = func() {
		t.Helper()
		var err error
		if s, err = server.NewServer(opts); err != nil {
			t.Fatal(err)
		}
		s.Start()
		if !s.ReadyForConnections(10 * time.Second) {
			t.Fatal("nats-server not ready")
		}
	}
	stop = func() { s.Shutdown(); s.WaitForShutdown() }
	start()
	t.Cleanup(func() { stop() })
	opts.Port = s.Addr().(*net.TCPAddr).Port // the same again after a restart
	nc, err := nats.Connect(s.ClientURL(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	if js, err = jetstream.New(nc); err != nil {
		t.Fatal(err)
	}
	return start, stop, nc, js
}
