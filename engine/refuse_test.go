package engine_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/turnstile-dev/turnstile/engine"
	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/internal/testenv"
)

// A malformed message under the id of a command already decided stores
// nothing: the engine's direct reply is the stored outcome, not the refusal
// it could not store, and the refusal is not counted.
func TestRefusalUnderADecidedIDRepliesTheStoredOutcome(t *testing.T) {
	metrics := engine.NewMetrics(nil)
	core := testenv.StartCore(t, testenv.CoreOptions{Engine: engine.Config{Metrics: metrics}})
	nc, _ := core.Connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cl := core.Client(t, "t")
	first := send(t, cl, fsm.Command{ID: "decided-1", Type: fsm.Create, Workspace: "decided"})
	if first.Outcome != fsm.Accepted {
		t.Fatalf("create: %+v", first)
	}
	sub, err := nc.SubscribeSync("_INBOX.refusal.>")
	if err != nil {
		t.Fatal(err)
	}
	m := nats.NewMsg(events.NewNames("").Command("decided"))
	m.Data = []byte(`{"id":"decided-1","type":"create","workspace":"decided","colour":"blue"}`)
	m.Header.Set(events.ReplyHeader, "_INBOX.refusal.decided-1")
	if err := nc.PublishMsg(m); err != nil {
		t.Fatal(err)
	}
	r, err := sub.NextMsg(20 * time.Second)
	if err != nil {
		t.Fatalf("no reply: %v", err)
	}
	got, err := events.DecodeOutcome(r.Data)
	if err != nil {
		t.Fatal(err)
	}
	if got.Outcome != fsm.Accepted || got.EventSeq != first.EventSeq || got.Rejection != nil {
		t.Errorf("reply %+v, want the stored outcome %+v", got, first)
	}
	stored, ok, err := core.Store.Outcome(ctx, "decided-1")
	if err != nil || !ok || stored.Outcome != fsm.Accepted {
		t.Fatalf("stored outcome: %+v, %v, %v", stored, ok, err)
	}
	testenv.Eventually(t, 20*time.Second, "every command handled", func() bool { return consumerDone(core) })
	if n := testutil.ToFloat64(metrics.Commands.WithLabelValues(string(fsm.Create), string(fsm.Rejected))); n != 0 {
		t.Errorf("%v create commands counted rejected; none was stored", n)
	}
	checkLog(t, core)
}
