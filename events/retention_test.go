package events_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/internal/testenv"
)

// issue 12 item 10: outcomes that wrote no event (a flood of refused
// commands) expire after the retention; accepted outcomes and events stay,
// and no command outlives its outcome.
func TestRejectedRetention(t *testing.T) {
	n := testenv.StartNATS(t, testenv.NATSOptions{})
	_, js := n.Connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	names := events.NewNames("")

	t.Run("ErrShorterThanDuplicateWindow", func(t *testing.T) {
		err := events.EnsureStreams(ctx, js, events.NewNames("short"), events.StreamOptions{RejectedRetention: time.Minute})
		if err == nil {
			t.Fatal("a retention shorter than the duplicate window was accepted")
		}
	})

	const retention = 2 * time.Second
	if err := events.EnsureStreams(ctx, js, names, events.StreamOptions{DuplicateWindow: time.Second, RejectedRetention: retention}); err != nil {
		t.Fatal(err)
	}
	cs, err := js.Stream(ctx, names.CommandStream())
	if err != nil {
		t.Fatal(err)
	}
	if got := cs.CachedInfo().Config.MaxAge; got != retention {
		t.Fatalf("commands kept %v, want %v: no longer than their outcomes", got, retention)
	}
	store, err := events.OpenStore(ctx, js, names, events.Codec{})
	if err != nil {
		t.Fatal(err)
	}
	if store.RejectedRetention() != retention {
		t.Fatalf("store retention %v, want %v", store.RejectedRetention(), retention)
	}
	now := time.Now().UTC()
	rejected := events.OutcomeRecord{CommandID: "r1", Workspace: "ws-1", CommandType: fsm.Create, Outcome: fsm.Rejected,
		Rejection: &fsm.Rejection{Code: fsm.CodeBusy, Message: "busy"}, ReceivedAt: now, DecidedAt: now}
	noop := events.OutcomeRecord{CommandID: "n1", Workspace: "ws-1", CommandType: fsm.Start, Outcome: fsm.Noop, ReceivedAt: now, DecidedAt: now}
	accepted := events.OutcomeRecord{CommandID: "a1", Workspace: "ws-1", CommandType: fsm.Create, Outcome: fsm.Accepted,
		EventSeq: 1, Generation: 1, State: fsm.Provisioning, ReceivedAt: now, DecidedAt: now}
	for _, o := range []events.OutcomeRecord{rejected, noop, accepted} {
		if res, _ := store.Commit(ctx, []events.Write{{Outcome: o}}, events.CommitOptions{}); res[0].Err != nil || res[0].Existing != nil {
			t.Fatalf("commit %s outcome: %+v", o.Outcome, res[0])
		}
		es, err := js.Stream(ctx, names.EventStream())
		if err != nil {
			t.Fatal(err)
		}
		m, err := es.GetLastMsgForSubject(ctx, names.Outcome(o.CommandID))
		if err != nil {
			t.Fatal(err)
		}
		ttl := m.Header.Get(jetstream.MsgTTLHeader)
		if want := map[bool]string{true: "", false: retention.String()}[o.Outcome == fsm.Accepted]; ttl != want {
			t.Fatalf("%s outcome has Nats-TTL %q, want %q", o.Outcome, ttl, want)
		}
	}
	testenv.Eventually(t, 30*time.Second, "the rejected and no-op outcomes to expire", func() bool {
		_, r, err1 := store.Outcome(ctx, "r1")
		_, n, err2 := store.Outcome(ctx, "n1")
		return err1 == nil && err2 == nil && !r && !n
	})
	if _, ok, err := store.Outcome(ctx, "a1"); err != nil || !ok {
		t.Fatalf("accepted outcome: ok=%v err=%v, want kept", ok, err)
	}
	// Expired, the id may be decided again: its outcome subject is empty.
	if res, _ := store.Commit(ctx, []events.Write{{Outcome: rejected}}, events.CommitOptions{}); res[0].Err != nil || res[0].Existing != nil {
		t.Fatalf("outcome of an expired command id: %+v", res[0])
	}
}
