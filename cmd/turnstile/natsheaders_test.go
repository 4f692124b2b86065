package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestAckRepliesReachNoConsumer: a request's reply subject crosses the
// users' account's imports unchanged when it starts with $JS.ACK. (the
// server's exception for pull consumers across accounts), so a direct
// get answered there would be an ack, a nak or a term (its body, which a
// user stored; a 404's empty body acks) of a message pending on a
// consumer in serve's account: the engine's, the worker's, a webhook's.
// nats-server refuses a client's publish with such a reply (or a _R_.
// one) before anything else. Guards that (passes on the main this started
// from).
func TestAckRepliesReachNoConsumer(t *testing.T) {
	s := startInProcessServe(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	// A consumer in serve's account with a message pending: the admin
	// role's own, as the engine's and the worker's have theirs.
	admin, err := nats.NkeyOptionFromSeed(filepath.Join(s.dir, natsAdminNkeyFile))
	if err != nil {
		t.Fatal(err)
	}
	anc, err := nats.Connect(s.natsURL, admin)
	if err != nil {
		t.Fatal(err)
	}
	defer anc.Close()
	ajs, err := jetstream.New(anc)
	if err != nil {
		t.Fatal(err)
	}
	nc, js, errs := s.connectUser(t)
	if _, err := js.Publish(ctx, "turnstile.cmd.pending", []byte(`{"not":"a command"}`)); err != nil {
		t.Fatal(err)
	}
	cons, err := ajs.CreateOrUpdateConsumer(ctx, "TURNSTILE_COMMANDS", jetstream.ConsumerConfig{
		Durable: "probe", AckPolicy: jetstream.AckExplicitPolicy, AckWait: time.Hour, FilterSubject: "turnstile.cmd.*.pending",
	})
	if err != nil {
		t.Fatal(err)
	}
	batch, err := cons.Fetch(1, jetstream.FetchMaxWait(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var ackSubject string
	for m := range batch.Messages() {
		ackSubject = m.Reply()
	}
	if ackSubject == "" {
		t.Fatalf("nothing fetched: %v", batch.Error())
	}
	pending := func() int {
		ci, err := js.Consumer(ctx, "TURNSTILE_COMMANDS", "probe")
		if err != nil {
			t.Fatal(err)
		}
		info, err := ci.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return info.NumAckPending
	}
	if n := pending(); n != 1 {
		t.Fatalf("%d messages pending, want 1", n)
	}
	// Answered with an empty body: the 404 of a sequence that is not
	// there, which acks.
	if err := nc.PublishRequest("$JS.API.DIRECT.GET.TURNSTILE_COMMANDS", ackSubject, []byte(`{"seq":999999999}`)); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	waitViolation(t, errs, ackSubject)
	// The server answers at once; an ack not seen in 5 seconds did not land.
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		if n := pending(); n == 0 {
			t.Fatalf("the user role acked a message pending on a consumer in serve's account (reply %s)", ackSubject)
		}
	}
}

// TestJetStreamHeadersOnCommands: a user command may carry any header,
// and JetStream acts on its Nats-* publish headers before the engine sees
// the command. None deletes, purges, rolls up, expires, schedules or
// blocks other commands: the command stream allows no rollup, TTL, batch,
// schedule or counter, so each such message is refused whole; the
// expectations only refuse the sender's own message; the rest are stored
// as headers the engine ignores. Guards the command stream's configuration
// (events/jetstream.go; passes on the main this started from).
func TestJetStreamHeadersOnCommands(t *testing.T) {
	s := startInProcessServe(t, nil)
	if code, out, errs := runCLI(t, s.env, "create", "victim", "--wait"); code != 0 {
		t.Fatalf("create: exit %d\n%s%s", code, out, errs)
	}
	_, js, _ := s.connectUser(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	st, err := js.Stream(ctx, "TURNSTILE_COMMANDS")
	if err != nil {
		t.Fatal(err)
	}
	before, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	refused := []nats.Header{
		{"Nats-Rollup": {"all"}},
		{"Nats-Rollup": {"sub"}},
		{"Nats-TTL": {"1s"}},
		{"Nats-TTL": {"never"}},
		{"Nats-Batch-Id": {"b1"}, "Nats-Batch-Sequence": {"1"}},
		{"Nats-Batch-Id": {"b1"}, "Nats-Batch-Sequence": {"1"}, "Nats-Batch-Commit": {"1"}},
		{"Nats-Schedule": {"@every 1s"}, "Nats-Schedule-Target": {"turnstile.cmd.victim"}},
		{"Nats-Schedule": {"@at 2026-01-01T00:00:00Z"}, "Nats-Schedule-Target": {"turnstile.cmd.victim"}, "Nats-Schedule-Rollup": {"sub"}},
		{"Nats-Schedule-Next": {"purge"}},
		{"Nats-Scheduler": {"turnstile.cmd.victim"}, "Nats-Schedule-Next": {"purge"}},
		{"Nats-Incr": {"1"}},
		{"Nats-Expected-Stream": {"TURNSTILE_EVENTS"}},
		{"Nats-Expected-Last-Sequence": {"0"}},
		{"Nats-Expected-Last-Subject-Sequence": {"0"}, "Nats-Expected-Last-Subject-Sequence-Subject": {"turnstile.cmd.*.victim"}},
		{"Nats-Expected-Last-Msg-Id": {"x"}},
		{"Nats-Stream-Source": {"TURNSTILE_EVENTS 1 > >"}},
	}
	stored := []nats.Header{
		{"Nats-Marker-Reason": {"Purge"}},
		{"Nats-Marker-Reason": {"Remove"}},
		{"Nats-Required-Api-Level": {"99"}},
		{"Nats-Counter-Sources": {"{}"}},
		{"Nats-Request-Info": {`{"acc":"$G","svc":"$G"}`}},
	}
	n := 0
	publish := func(h nats.Header) error {
		n++
		m := &nats.Msg{Subject: "turnstile.cmd.victim", Header: h,
			Data: fmt.Appendf(nil, `{"id":"hdr-%d","type":"configure","workspace":"victim","spec":{"labels":{"n":"%d"}}}`, n, n)}
		_, err := js.PublishMsg(ctx, m)
		return err
	}
	for _, h := range refused {
		if err := publish(h); err == nil {
			t.Errorf("a command with %v was stored", h)
		}
	}
	for _, h := range stored {
		if err := publish(h); err != nil {
			t.Errorf("a command with %v: %v", h, err)
		}
	}
	after, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if after.State.FirstSeq != before.State.FirstSeq || after.State.Msgs != before.State.Msgs+uint64(len(stored)) {
		t.Errorf("the command stream went from %d messages from %d to %d from %d, want %d more",
			before.State.Msgs, before.State.FirstSeq, after.State.Msgs, after.State.FirstSeq, len(stored))
	}
	// Every stored one is decided, in order, and the engine goes on.
	for _, args := range [][]string{{"wait", "victim", "--state", "running", "--timeout", "30s"}, {"stop", "victim", "--wait"}} {
		if code, out, errs := runCLI(t, s.env, args...); code != 0 {
			t.Fatalf("%v after the headers: exit %d\n%s%s", args, code, out, errs)
		}
	}
	code, out, errs := runCLI(t, s.env, "history", "victim")
	if code != 0 {
		t.Fatalf("history: exit %d\n%s%s", code, out, errs)
	}
	for i := len(refused) + 1; i <= n; i++ {
		if !strings.Contains(out, fmt.Sprintf("hdr-%d ", i)) {
			t.Errorf("hdr-%d is not in victim's history:\n%s", i, out)
		}
	}
}

// TestTraceHeadersWriteNothing: a message with Nats-Trace-Dest has the
// server publish trace events to that subject, in the sender's account,
// whatever its reply subject. The server checks the destination against
// the sender's publish permissions first, and the users' account reaches
// serve's only through its imports, so no trace event lands on a system
// report, event, outcome, KV or reply subject of serve's. Guards the
// permissions and the account split (passes on the main this started
// from).
func TestTraceHeadersWriteNothing(t *testing.T) {
	s := startInProcessServe(t, nil)
	nc, js, errs := s.connectUser(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dests := []string{
		"turnstile.sys.traced", "turnstile.evt.traced", "turnstile.out.traced",
		"$KV.TURNSTILE_WEBHOOKS.traced", "$KV.TURNSTILE_ENGINES_turnstile-engine.traced", "$KV.TURNSTILE_KEYS.traced",
		"_TURNSTILE_REPLY.traced", "_TURNSTILE_INBOX.traced", "_INBOX.traced",
	}
	for _, only := range []string{"", "true"} {
		for _, dest := range dests {
			h := nats.Header{"Nats-Trace-Dest": {dest}}
			if only != "" {
				h.Set("Nats-Trace-Only", only)
			}
			for _, subject := range []string{"turnstile.cmd.traced", "$JS.API.DIRECT.GET.TURNSTILE_COMMANDS"} {
				m := &nats.Msg{Subject: subject, Reply: nc.NewRespInbox(), Header: h, Data: []byte(`{"seq":1}`)}
				if err := nc.PublishMsg(m); err != nil {
					t.Fatal(err)
				}
				waitViolation(t, errs, dest)
			}
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ stream, subject string }{
		{"TURNSTILE_SYSTEM", "turnstile.sys.*.traced"},
		{"TURNSTILE_EVENTS", "turnstile.evt.traced"},
		{"TURNSTILE_EVENTS", "turnstile.out.traced"},
		{"TURNSTILE_COMMANDS", "turnstile.cmd.*.traced"},
	} {
		st, err := js.Stream(ctx, c.stream)
		if err != nil {
			t.Fatal(err)
		}
		if m, err := st.GetLastMsgForSubject(ctx, c.subject); err == nil {
			t.Errorf("%s holds %s: %s", c.stream, m.Subject, m.Data)
		} else if !errors.Is(err, jetstream.ErrMsgNotFound) {
			t.Fatal(err)
		}
	}
}
