package engine_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/turnstile-dev/turnstile/engine"
	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/internal/testenv"
)

// appendDirect records cmd's event as another engine would, behind this
// engine's back.
func appendDirect(t *testing.T, core *testenv.Core, cmd fsm.Command) {
	t.Helper()
	ctx := context.Background()
	h, err := core.Store.Load(ctx, cmd.Workspace)
	if err != nil {
		t.Fatal(err)
	}
	d := fsm.Decide(h.State, cmd)
	if d.Outcome != fsm.Accepted {
		t.Fatalf("setup: %s not accepted: %+v", cmd.Type, d)
	}
	if _, err := core.Store.Append(ctx, events.NewEnvelope(cmd.ID, h.State, *d.Event, cmd, time.Now()), h.StreamSeq); err != nil {
		t.Fatal(err)
	}
}

// The engine's head cache must not decide commands that append nothing: a
// start after another engine stopped the workspace is accepted, not a no-op
// against a cached "running".
func TestCachedHeadNeverDecidesWithoutCAS(t *testing.T) {
	core := testenv.StartCore(t, testenv.CoreOptions{})
	cl := core.Client(t, "t")
	send(t, cl, fsm.Command{Type: fsm.Create, Workspace: "cache"})
	send(t, cl, fsm.Command{Type: fsm.ProvisionSucceeded, Workspace: "cache", Generation: 1}) // cached: running g1
	appendDirect(t, core, fsm.Command{ID: "other-stop", Type: fsm.Stop, Workspace: "cache"})
	appendDirect(t, core, fsm.Command{ID: "other-stopped", Type: fsm.StopSucceeded, Workspace: "cache", Generation: 2})

	if o := send(t, cl, fsm.Command{Type: fsm.Start, Workspace: "cache"}); o.Outcome != fsm.Accepted || o.Generation != 3 {
		t.Fatalf("start after another engine stopped the workspace: %+v", o)
	}
	// And a system outcome for a generation the cache has not seen.
	if o := send(t, cl, fsm.Command{Type: fsm.ProvisionSucceeded, Workspace: "cache", Generation: 3}); o.Outcome != fsm.Accepted {
		t.Fatalf("provision_succeeded of the current generation: %+v", o)
	}
}

// Commands still queued when an engine closes are handed back oldest first,
// so a command published after the restart cannot overtake them.
func TestOrderSurvivesEngineRestart(t *testing.T) {
	core := testenv.StartCore(t, testenv.CoreOptions{})
	cl := core.Client(t, "t")
	send(t, cl, fsm.Command{Type: fsm.Create, Workspace: "order"})
	ctx := context.Background()
	var ids []string
	for i := range 300 {
		c, err := cl.Publish(ctx, fsm.Command{Type: fsm.Configure, Workspace: "order",
			Spec: &fsm.Spec{Env: map[string]string{"N": fmt.Sprint(i)}}})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, c.ID)
	}
	if err := core.Engines[0].Close(); err != nil { // mid-way through the configures
		t.Fatal(err)
	}
	last, err := cl.Publish(ctx, fsm.Command{Type: fsm.Stop, Workspace: "order"})
	if err != nil {
		t.Fatal(err)
	}
	ids = append(ids, last.ID)
	core.StartEngine(t)
	wctx, cancel := context.WithTimeout(ctx, 25*time.Second) // under the 30 s ack wait
	defer cancel()
	if _, err := cl.Outcome(wctx, last.ID); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 20*time.Second, "every command handled", func() bool { return consumerDone(core) })
	var got []string
	if err := core.Store.History(ctx, "order", func(e events.Envelope) error {
		got = append(got, e.CommandID)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	got = got[1:] // the create
	if len(got) != len(ids) {
		t.Fatalf("%d events for %d commands", len(got), len(ids))
	}
	for i := range ids {
		if got[i] != ids[i] {
			t.Fatalf("event %d is command %s, want %s: a later command overtook an earlier one", i+1, got[i], ids[i])
		}
	}
}

// nats-server refuses an atomic batch of more than 1,000 messages, and a
// refused batch is rewritten one command at a time: MaxBatch is held to
// MaxAtomicCommands, so a backlog is written in large batches, none
// refused.
func TestMaxBatchHeldToServerLimit(t *testing.T) {
	metrics := engine.NewMetrics(prometheus.NewRegistry())
	core := testenv.StartCore(t, testenv.CoreOptions{Engine: engine.Config{Metrics: metrics, MaxBatch: 2000, Parallel: 2000}})
	if err := core.Engines[0].Close(); err != nil { // a backlog builds while no engine runs
		t.Fatal(err)
	}
	cl := core.Client(t, "t")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ids := make([]string, 1500)
	for i := range ids {
		cmd, err := cl.Publish(ctx, fsm.Command{Type: fsm.Create, Workspace: fmt.Sprintf("big-%d", i)})
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = cmd.ID
	}
	core.StartEngine(t)
	for _, id := range ids {
		if o, err := cl.Outcome(ctx, id); err != nil || o.Outcome != fsm.Accepted {
			t.Fatalf("command %s: %+v %v", id, o, err)
		}
	}
	if n := testutil.ToFloat64(metrics.BatchFallbacks); n != 0 {
		t.Fatalf("%v atomic batches refused by the server", n)
	}
	var m dto.Metric
	if err := metrics.Batches.Write(&m); err != nil {
		t.Fatal(err)
	}
	var upTo256 uint64
	for _, b := range m.Histogram.GetBucket() {
		if b.GetUpperBound() == 256 {
			upTo256 = b.GetCumulativeCount()
		}
	}
	if upTo256 == m.Histogram.GetSampleCount() {
		t.Fatalf("no batch above 256 commands (%d batches): the backlog did not exercise the limit", upTo256)
	}
}
