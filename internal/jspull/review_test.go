package jspull_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/turnstile-dev/turnstile/internal/jspull"
	"github.com/turnstile-dev/turnstile/internal/testenv"
)

// publish stores n messages "m0".."m<n-1>" on s.x, after the stream S
// (subjects s.>) is made if make is set.
func publish(t *testing.T, js jetstream.JetStream, n int, make bool, h nats.Header) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if make {
		if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>"}}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range n {
		if _, err := js.PublishMsg(ctx, &nats.Msg{Subject: "s.x", Data: fmt.Appendf(nil, "m%d", i), Header: h}); err != nil {
			t.Fatal(err)
		}
	}
}

// pullRequest is the part of a pull request these tests look at.
type pullRequest struct {
	Batch int    `json:"batch"`
	PinID string `json:"id"`
}

// watchRequests copies the pull requests sent on subject, over nc itself:
// its subscription is made again before anything nc buffered is sent on a
// reconnect, and it sees nc's requests in the order they were sent.
func watchRequests(t *testing.T, nc *nats.Conn, subject string) chan *nats.Msg {
	t.Helper()
	reqs := make(chan *nats.Msg, 1000)
	sub, err := nc.ChanSubscribe(subject, reqs)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return reqs
}

// takeRequests returns the requests watchRequests copied so far, after a
// round trip on nc (which the server answers after routing what nc sent
// before it).
func takeRequests(t *testing.T, nc *nats.Conn, reqs chan *nats.Msg) []pullRequest {
	t.Helper()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	var out []pullRequest
	for {
		select {
		case m := <-reqs:
			var r pullRequest
			if err := json.Unmarshal(m.Data, &r); err != nil {
				t.Fatal(err)
			}
			out = append(out, r)
		default:
			return out
		}
	}
}

type result struct {
	m   jetstream.Msg
	err error
}

// reader calls Next over and over, beside the test, until it is stopped.
func reader(t *testing.T, it *jspull.Iter) chan result {
	t.Helper()
	got := make(chan result, 100)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			m, err := it.Next()
			got <- result{m, err}
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return
			}
		}
	}()
	t.Cleanup(func() { it.Stop(); <-done })
	return got
}

// receive waits for reader's next result.
func receive(t *testing.T, got chan result) result {
	t.Helper()
	return within(t, got, 20*time.Second, "Next")
}

// within waits for reader's next result at most d.
func within(t *testing.T, got chan result, d time.Duration, what string) result {
	t.Helper()
	select {
	case r := <-got:
		return r
	case <-time.After(d):
		t.Fatalf("%s: nothing in %v", what, d)
		return result{}
	}
}

// A message stored with a Nats-Pin-Id header, pulled without a priority
// group: its pin is not sent back (the server refuses a pin id from a pull
// of a consumer that is not pinned, 400, which ends the pull for good).
func TestStoredPinWithoutGroup(t *testing.T) {
	n := testenv.StartNATS(t, testenv.NATSOptions{})
	nc, js := n.Connect(t)
	publish(t, js, 1, true, nats.Header{"Nats-Pin-Id": {"forged"}})
	publish(t, js, 5, false, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := js.CreateConsumer(ctx, "S", jetstream.ConsumerConfig{Durable: "d", AckPolicy: jetstream.AckExplicitPolicy}); err != nil {
		t.Fatal(err)
	}
	// Batch 2: the pull asks again after the forged message.
	it, err := jspull.Messages(nc, jspull.NextSubject(js, "S", "d"), jspull.Options{Batch: 2, Expiry: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer it.Stop()
	for i := range 6 {
		m, err := next(t, it)
		if err != nil {
			t.Fatalf("delivery %d: %v", i+1, err)
		}
		_ = m.Ack()
	}
}

// A consumer deleted while none of the pull's requests waits at it (all
// delivered, the pull still handing them out) ends the pull as one deleted
// under a waiting request does: nothing answers its next request (503),
// the server says the consumer does not exist, and nothing ever will
// answer, so the caller must take it afresh. At once: not after 503s for
// a while (Expiry a minute here), an election in a cluster being one.
func TestDeletedBetweenRequests(t *testing.T) {
	n := testenv.StartNATS(t, testenv.NATSOptions{})
	nc, js := n.Connect(t)
	publish(t, js, 4, true, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cons := durable(t, js, jetstream.AckExplicitPolicy)
	it, err := jspull.Messages(nc, jspull.NextSubject(js, "S", "d"), jspull.Options{Batch: 2, Expiry: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer it.Stop()
	if _, err := next(t, it); err != nil {
		t.Fatal(err)
	}
	// The one request asked for 2, both delivered: none waits.
	testenv.Eventually(t, 10*time.Second, "the request filled", func() bool {
		info, err := cons.Info(ctx)
		return err == nil && info.Delivered.Stream == 2 && info.NumWaiting == 0
	})
	if err := js.DeleteConsumer(ctx, "S", "d"); err != nil {
		t.Fatal(err)
	}
	ended := make(chan error, 1)
	go func() {
		for {
			// As pull.LoopNotify reads it: these end the pull, the
			// rest are tried again.
			_, err := it.Next()
			if errors.Is(err, jetstream.ErrConsumerDeleted) || errors.Is(err, jetstream.ErrBadRequest) ||
				errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				ended <- err
				return
			}
		}
	}()
	select {
	case err := <-ended:
		if !errors.Is(err, jetstream.ErrConsumerDeleted) {
			t.Fatalf("the pull ended with %v", err)
		}
	case <-time.After(20 * time.Second):
		it.Stop()
		t.Log(<-ended)
		t.Fatal("the pull of a deleted consumer went on asking for 20 s")
	}
}

// A pin that ends (unpinned, or lapsed) under two waiting requests has
// each answered 423 with what it had left: the pull asks again once, for
// the batch, not once per 423 (the first request's leftover still waiting
// for its own 423), which would have the server deliver twice the batch.
func TestPinEndedUnderTwoRequests(t *testing.T) {
	n := testenv.StartNATS(t, testenv.NATSOptions{})
	nc, js := n.Connect(t)
	publish(t, js, 6, true, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cons, err := js.CreateConsumer(ctx, "S", jetstream.ConsumerConfig{Durable: "d", AckPolicy: jetstream.AckExplicitPolicy,
		PriorityPolicy: jetstream.PriorityPolicyPinned, PriorityGroups: []string{"g"}, PinnedTTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	subject := jspull.NextSubject(js, "S", "d")
	reqs := watchRequests(t, nc, subject)
	it, err := jspull.Messages(nc, subject, jspull.Options{Batch: 10, Expiry: time.Minute, Group: "g"})
	if err != nil {
		t.Fatal(err)
	}
	defer it.Stop()
	got := reader(t, it)
	// The first request (10) delivers 6, the read after the sixth asks
	// for 6 more with the pin: two wait, for 4 and 6.
	for i := range 6 {
		if r := receive(t, got); r.err != nil {
			t.Fatalf("delivery %d: %v", i+1, r.err)
		}
	}
	testenv.Eventually(t, 10*time.Second, "two requests waiting", func() bool {
		info, err := cons.Info(ctx)
		return err == nil && info.NumWaiting == 2
	})
	if got := takeRequests(t, nc, reqs); len(got) != 2 || got[0].Batch != 10 || got[1].Batch != 6 || got[1].PinID == "" {
		t.Fatalf("requests before the unpin: %+v", got)
	}
	st, err := js.Stream(ctx, "S")
	if err != nil {
		t.Fatal(err)
	}
	if err := st.UnpinConsumer(ctx, "d", "g"); err != nil {
		t.Fatal(err)
	}
	// The next command has both waiting requests answered 423, then goes
	// to the pull's next request, pinned anew.
	publish(t, js, 1, false, nil)
	if r := receive(t, got); r.err != nil || string(r.m.Data()) != "m0" {
		t.Fatalf("after the unpin: %v", r.err)
	}
	asked := 0
	for _, r := range takeRequests(t, nc, reqs) {
		if r.PinID != "" {
			t.Fatalf("a request with the old pin after the 423s: %+v", r)
		}
		asked += r.Batch
	}
	if asked > 10 {
		t.Fatalf("after the 423s the pull asked for %d, its batch is 10", asked)
	}
}

// While the connection is down the pull asks nothing: a request sent then
// waits in the client's buffer and reaches the server after the reconnect,
// beside the one the pull asks for then (its requests before went with the
// old connection), and the server would deliver more than the batch.
func TestNoRequestWhileDisconnected(t *testing.T) {
	start, stop, nc, js := restartable(t)
	publish(t, js, 6, true, nil)
	cons := durable(t, js, jetstream.AckExplicitPolicy)
	subject := jspull.NextSubject(js, "S", "d")
	reqs := watchRequests(t, nc, subject)
	it, err := jspull.Messages(nc, subject, jspull.Options{Batch: 10, Expiry: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer it.Stop()
	heldThrough(t, it, cons, 6)
	if got := takeRequests(t, nc, reqs); len(got) != 1 || got[0].Batch != 10 {
		t.Fatalf("requests before the restart: %+v", got)
	}
	stop()
	testenv.Eventually(t, 10*time.Second, "reconnecting", func() bool { return nc.Status() == nats.RECONNECTING })
	// The 5 held are handed out while disconnected: fewer than half of
	// the batch are still to come.
	got := reader(t, it)
	for i := range 5 {
		if r := receive(t, got); r.err != nil {
			t.Fatalf("delivery %d while disconnected: %v", i+2, r.err)
		}
	}
	start()
	var after []pullRequest
	testenv.Eventually(t, 20*time.Second, "a request for the batch after the reconnect", func() bool {
		if !nc.IsConnected() {
			return false
		}
		after = append(after, takeRequests(t, nc, reqs)...)
		for _, r := range after {
			if r.Batch == 10 {
				return true
			}
		}
		return false
	})
	asked := 0
	for _, r := range after {
		asked += r.Batch
	}
	if asked > 10 {
		t.Fatalf("after the reconnect the pull asked for %d (%+v), its batch is 10", asked, after)
	}
}

// Stop after Drain ends the pull at once, as Stop does, dropping what is
// held: a drain waits for a round trip to the server (up to nats.go's
// flush timeout, 10 s, while disconnected), and the engine's letGo stops
// a drain that has not finished in 5 s.
func TestStopAfterDrain(t *testing.T) {
	n := testenv.StartNATS(t, testenv.NATSOptions{})
	nc, err := nats.Connect(n.URL, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	publish(t, js, 6, true, nil)
	cons := durable(t, js, jetstream.AckExplicitPolicy)
	it, err := jspull.Messages(nc, jspull.NextSubject(js, "S", "d"), jspull.Options{Batch: 10, Expiry: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer it.Stop()
	heldThrough(t, it, cons, 6)
	n.Shutdown()
	testenv.Eventually(t, 10*time.Second, "reconnecting", func() bool { return nc.Status() == nats.RECONNECTING })
	it.Drain()
	for i := 0; i < 5; { // held: handed out (and the server's 409 Server Shutdown)
		m, err := next(t, it)
		if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
			t.Fatalf("delivery %d of the drain: %v", i+2, err)
		}
		if m != nil {
			i++
		}
	}
	it.Stop()
	stopped := time.Now()
	for {
		m, err := next(t, it)
		if m != nil {
			t.Fatal("a delivery after Drain and Stop")
		}
		if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
			break
		}
	}
	if d := time.Since(stopped); d > 2*time.Second {
		t.Fatalf("Next after Drain and Stop took %v", d)
	}
}

// Drain after Stop does nothing: what Stop dropped stays dropped.
func TestDrainAfterStop(t *testing.T) {
	n := testenv.StartNATS(t, testenv.NATSOptions{})
	nc, js := n.Connect(t)
	publish(t, js, 6, true, nil)
	cons := durable(t, js, jetstream.AckExplicitPolicy)
	it, err := jspull.Messages(nc, jspull.NextSubject(js, "S", "d"), jspull.Options{Batch: 10, Expiry: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	heldThrough(t, it, cons, 6)
	it.Stop()
	it.Drain()
	if m, err := next(t, it); m != nil || !errors.Is(err, jetstream.ErrMsgIteratorClosed) {
		t.Fatalf("Next after Stop and Drain: %v, %v", m, err)
	}
}

// Stop, Drain and the connection's close, in any order and beside Next,
// end the pull: Next returns ErrMsgIteratorClosed, nothing panics (the
// subscription's closed handler may run twice), nothing is left running.
func TestEndsConcurrently(t *testing.T) {
	n := testenv.StartNATS(t, testenv.NATSOptions{})
	_, js := n.Connect(t)
	publish(t, js, 50, true, nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := js.CreateConsumer(ctx, "S", jetstream.ConsumerConfig{Durable: "d", AckPolicy: jetstream.AckNonePolicy}); err != nil {
		t.Fatal(err)
	}
	subject := jspull.NextSubject(js, "S", "d")
	for i := range 60 {
		nc, err := nats.Connect(n.URL)
		if err != nil {
			t.Fatal(err)
		}
		it, err := jspull.Messages(nc, subject, jspull.Options{Batch: 8, Expiry: 2 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		ended := make(chan error, 1)
		go func() {
			for {
				if _, err := it.Next(); errors.Is(err, jetstream.ErrMsgIteratorClosed) {
					ended <- err
					return
				}
			}
		}()
		ends := []func(){it.Stop, it.Drain, nc.Close}
		start := make(chan struct{})
		var done []chan struct{}
		for j := range ends {
			d := make(chan struct{})
			done = append(done, d)
			end := ends[(i+j)%len(ends)]
			go func() { <-start; end(); close(d) }()
		}
		close(start)
		for _, d := range done {
			<-d
		}
		select {
		case <-ended:
		case <-ctx.Done():
			t.Fatalf("round %d: Next did not end", i)
		}
		nc.Close()
	}
}

// A consumer deleted and made again while none of the pull's requests
// waited at it (no 409) ends the pull at the made one's first delivery,
// whose consumer sequence starts again: served in place, its deliveries
// would follow the old one's (whose acks reach no one), where the engine
// takes the partition afresh (owner.retake).
func TestMadeAgainBetweenRequests(t *testing.T) {
	n := testenv.StartNATS(t, testenv.NATSOptions{})
	nc, js := n.Connect(t)
	publish(t, js, 4, true, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg := jetstream.ConsumerConfig{Durable: "d", AckPolicy: jetstream.AckExplicitPolicy}
	cons, err := js.CreateConsumer(ctx, "S", cfg)
	if err != nil {
		t.Fatal(err)
	}
	it, err := jspull.Messages(nc, jspull.NextSubject(js, "S", "d"), jspull.Options{Batch: 2, Expiry: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer it.Stop()
	if _, err := next(t, it); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, "the request filled", func() bool {
		info, err := cons.Info(ctx)
		return err == nil && info.Delivered.Stream == 2 && info.NumWaiting == 0
	})
	if err := js.DeleteConsumer(ctx, "S", "d"); err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateConsumer(ctx, "S", cfg); err != nil {
		t.Fatal(err)
	}
	for i := 2; ; i++ {
		m, err := next(t, it)
		if errors.Is(err, jetstream.ErrConsumerDeleted) {
			if i != 3 {
				t.Fatalf("ended at read %d", i)
			}
			break
		}
		if err != nil {
			t.Fatalf("read %d: %v", i, err)
		}
		if md, _ := m.Metadata(); md.Sequence.Consumer != uint64(i) {
			t.Fatalf("read %d: the made consumer's delivery %d, stream sequence %d, handed out", i, md.Sequence.Consumer, md.Sequence.Stream)
		}
	}
	if _, err := next(t, it); !errors.Is(err, jetstream.ErrMsgIteratorClosed) {
		t.Fatalf("Next after the end: %v", err)
	}
}

// What was delivered before a reconnect and is still held counts after
// it: the pull asks nothing more until fewer than half of the batch are
// held, where asking the whole batch again beside them would have the
// server deliver more than msgs holds, and the client drop the rest (slow
// consumer).
func TestHeldAcrossReconnect(t *testing.T) {
	start, stop, nc, js := restartable(t)
	const batch = 40
	publish(t, js, batch, true, nil)
	cons := durable(t, js, jetstream.AckNonePolicy)
	subject := jspull.NextSubject(js, "S", "d")
	reqs := watchRequests(t, nc, subject)
	it, err := jspull.Messages(nc, subject, jspull.Options{Batch: batch, Expiry: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer it.Stop()
	heldThrough(t, it, cons, batch)
	takeRequests(t, nc, reqs)
	stop()
	start()
	testenv.Eventually(t, 10*time.Second, "reconnected", nc.IsConnected)
	publish(t, js, batch, false, nil)
	// 39 held: 15 handed out leave 24, more than half of the batch.
	for i := 1; i <= 15; i++ {
		m, err := next(t, it)
		if err != nil {
			t.Fatalf("read %d: %v", i+1, err)
		}
		if md, _ := m.Metadata(); md.Sequence.Stream != uint64(i+1) {
			t.Fatalf("read %d: stream sequence %d", i+1, md.Sequence.Stream)
		}
	}
	if got := takeRequests(t, nc, reqs); len(got) != 0 {
		t.Fatalf("with 24 of the batch of %d held the pull asked for %+v", batch, got)
	}
}

// While NATS is away, a call of Next after the one that read RECONNECTING
// reports no missed heartbeats (there is no server to send them): each was
// a warning, a sweep and a retry delay in the engine, every 2 heartbeats,
// for the whole outage. It waits, and goes on after the reconnect.
func TestNoMissedHeartbeatsWhileAway(t *testing.T) {
	start, stop, nc, js := restartable(t)
	publish(t, js, 2, true, nil)
	cons := durable(t, js, jetstream.AckExplicitPolicy)
	// Expiry 1 s: heartbeats every 0.5 s, missed after 1 s.
	it, err := jspull.Messages(nc, jspull.NextSubject(js, "S", "d"), jspull.Options{Batch: 10, Expiry: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer it.Stop()
	heldThrough(t, it, cons, 2)
	stop()
	testenv.Eventually(t, 10*time.Second, "reconnecting", func() bool { return nc.Status() == nats.RECONNECTING })
	// The held delivery; this call may read RECONNECTING, the next not.
	if m, err := next(t, it); err != nil || m == nil {
		t.Fatalf("the held delivery: %v", err)
	}
	got := reader(t, it)
	// Three times the heartbeats' limit, away.
	away := time.NewTimer(3 * time.Second)
	defer away.Stop()
away:
	for {
		select {
		case r := <-got:
			// The server's 409 Server Shutdown, sent as it went, may
			// come first; nothing after it.
			if r.m != nil || errors.Is(r.err, jetstream.ErrNoHeartbeat) || !strings.Contains(fmt.Sprint(r.err), "Server Shutdown") {
				t.Fatalf("while NATS was away Next returned %v, %v", r.m, r.err)
			}
		case <-away.C:
			break away
		}
	}
	start()
	testenv.Eventually(t, 10*time.Second, "reconnected", nc.IsConnected)
	publish(t, js, 1, false, nil)
	for {
		r := receive(t, got)
		if r.m != nil {
			break
		}
		if errors.Is(r.err, jetstream.ErrMsgIteratorClosed) || errors.Is(r.err, jetstream.ErrConsumerDeleted) {
			t.Fatalf("after the reconnect: %v", r.err)
		}
	}
}

// durable makes consumer d of stream S, with acks as ack says.
func durable(t *testing.T, js jetstream.JetStream, ack jetstream.AckPolicy) jetstream.Consumer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cons, err := js.CreateConsumer(ctx, "S", jetstream.ConsumerConfig{Durable: "d", AckPolicy: ack})
	if err != nil {
		t.Fatal(err)
	}
	return cons
}

// heldThrough takes the pull's first delivery, then waits until cons has
// delivered through stream sequence n and the rest is held in the pull
// (the consumer's info counts a delivery still on its way, which a
// restart of the server would drop). At least n-1 held: an idle heartbeat
// may be held too, sent after the deliveries (the callers store all n
// before the pull asks, and the server sends in order).
func heldThrough(t *testing.T, it *jspull.Iter, cons jetstream.Consumer, n uint64) {
	t.Helper()
	if _, err := next(t, it); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, fmt.Sprintf("stream sequence %d delivered and held", n), func() bool {
		info, err := cons.Info(context.Background())
		return err == nil && info.Delivered.Stream == n && jspull.Held(it) >= int(n)-1
	})
}
