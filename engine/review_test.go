package engine_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

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

// deadTake takes the next command from the engine's durable consumer and
// never acks it: what an engine killed with kill -9 leaves behind.
func deadTake(t *testing.T, core *testenv.Core, wantID string) jetstream.Msg {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cons, err := core.JS.Consumer(ctx, core.Store.Names().CommandStream(), "turnstile-engine")
	if err != nil {
		t.Fatal(err)
	}
	batch, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var taken []jetstream.Msg
	for m := range batch.Messages() {
		taken = append(taken, m)
	}
	if len(taken) != 1 || taken[0].Headers().Get(jetstream.MsgIDHeader) != wantID {
		t.Fatalf("setup: took %d commands, want %s alone", len(taken), wantID)
	}
	return taken[0]
}

// eventCommands lists the commands of ws's events, in history order.
func eventCommands(t *testing.T, core *testenv.Core, ws string) []string {
	t.Helper()
	var got []string
	if err := core.Store.History(context.Background(), ws, func(e events.Envelope) error {
		got = append(got, e.CommandID)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return got
}

// An engine killed while it held a command leaves it unacked: the server
// redelivers it only after the ack wait. A command of the same workspace
// sent after a new engine started must wait for it, not overtake it (here
// a delete would be refused not_found ahead of its create).
func TestOrderSurvivesEngineKill(t *testing.T) {
	core := testenv.StartCore(t, testenv.CoreOptions{Engine: engine.Config{AckWait: 2 * time.Second}})
	cl := core.Client(t, "t")
	if err := core.Engines[0].Close(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	create, err := cl.Publish(ctx, fsm.Command{Type: fsm.Create, Workspace: "killed"})
	if err != nil {
		t.Fatal(err)
	}
	deadTake(t, core, create.ID)
	core.StartEngine(t)
	del, err := cl.Publish(ctx, fsm.Command{Type: fsm.Delete, Workspace: "killed"})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []fsm.Command{create, del} {
		o, err := cl.Outcome(ctx, c.ID)
		if err != nil {
			t.Fatal(err)
		}
		if o.Outcome != fsm.Accepted {
			t.Fatalf("%s: %s %+v, want accepted: it overtook or was overtaken", c.Type, o.Outcome, o.Rejection)
		}
	}
	if got := eventCommands(t, core, "killed"); !slices.Equal(got, []string{create.ID, del.ID}) {
		t.Fatalf("events of commands %v, want %v", got, []string{create.ID, del.ID})
	}
}

// A command another engine took is held for too, and the workspace goes
// on as soon as that engine records its outcome, not at the ack wait.
func TestHeldCommandFinishedElsewhere(t *testing.T) {
	core := testenv.StartCore(t, testenv.CoreOptions{Engine: engine.Config{AckWait: 5 * time.Minute}})
	cl := core.Client(t, "t")
	if err := core.Engines[0].Close(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	create, err := cl.Publish(ctx, fsm.Command{Type: fsm.Create, Workspace: "elsewhere"})
	if err != nil {
		t.Fatal(err)
	}
	other := deadTake(t, core, create.ID) // the other engine, still at work
	core.StartEngine(t)
	del, err := cl.Publish(ctx, fsm.Command{Type: fsm.Delete, Workspace: "elsewhere"})
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, "the delete taken", func() bool {
		info, err := core.JS.Consumer(ctx, core.Store.Names().CommandStream(), "turnstile-engine")
		return err == nil && info.CachedInfo().NumAckPending == 2
	})
	if _, ok, err := core.Store.Outcome(ctx, del.ID); err != nil || ok {
		t.Fatalf("the delete got an outcome (%v, %v) while its create is unfinished", ok, err)
	}
	// The other engine finishes the create: event, outcome, ack.
	appendDirect(t, core, create)
	h, err := core.Store.Load(ctx, "elsewhere")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := core.Store.PublishOutcome(ctx, events.OutcomeRecord{CommandID: create.ID, Workspace: "elsewhere",
		CommandType: fsm.Create, Outcome: fsm.Accepted, EventSeq: h.Last.Seq, Generation: h.State.Generation,
		State: h.State.Status, ReceivedAt: time.Now().UTC(), DecidedAt: time.Now().UTC()}); err != nil {
		t.Fatal(err)
	}
	if err := other.Ack(); err != nil {
		t.Fatal(err)
	}
	o, err := cl.Outcome(ctx, del.ID)
	if err != nil {
		t.Fatal(err)
	}
	if o.Outcome != fsm.Accepted {
		t.Fatalf("delete: %s %+v, want accepted after the create", o.Outcome, o.Rejection)
	}
	if got := eventCommands(t, core, "elsewhere"); !slices.Equal(got, []string{create.ID, del.ID}) {
		t.Fatalf("events of commands %v, want %v", got, []string{create.ID, del.ID})
	}
}

// A held command that will never come back (removed from the stream after
// the dead engine took it) holds its workspace only until twice the ack
// wait: then the workspace goes on without it.
func TestHeldCommandRemovedFromStream(t *testing.T) {
	// The removal below must come before the server redelivers the create:
	// it follows the dead take by one engine start (tens of milliseconds).
	const ackWait = 5 * time.Second
	core := testenv.StartCore(t, testenv.CoreOptions{Engine: engine.Config{AckWait: ackWait}})
	cl := core.Client(t, "t")
	if err := core.Engines[0].Close(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	create, err := cl.Publish(ctx, fsm.Command{Type: fsm.Create, Workspace: "removed"})
	if err != nil {
		t.Fatal(err)
	}
	taken := deadTake(t, core, create.ID)
	md, err := taken.Metadata()
	if err != nil {
		t.Fatal(err)
	}
	stream, err := core.JS.Stream(ctx, core.Store.Names().CommandStream())
	if err != nil {
		t.Fatal(err)
	}
	started := time.Now()
	core.StartEngine(t) // holds the create
	if err := stream.DeleteMsg(ctx, md.Sequence.Stream); err != nil {
		t.Fatal(err)
	}
	del, err := cl.Publish(ctx, fsm.Command{Type: fsm.Delete, Workspace: "removed"})
	if err != nil {
		t.Fatal(err)
	}
	o, err := cl.Outcome(ctx, del.ID)
	if err != nil {
		t.Fatalf("delete behind a command that will not come back: %v", err)
	}
	if !isRejection(o, fsm.CodeNotFound) {
		t.Fatalf("delete: %s %+v, want rejected not_found (its create is gone)", o.Outcome, o.Rejection)
	}
	// Nothing but the deadline releases this hold.
	if deadline := started.Add(2 * ackWait); o.DecidedAt.Before(deadline) {
		t.Fatalf("delete decided at %s, before the hold's deadline %s", o.DecidedAt, deadline)
	}
}

// An engine closed while it still holds workspaces stops its release loop
// and hands back only real commands (goleak checks the loop is gone).
func TestCloseWhileHolding(t *testing.T) {
	core := testenv.StartCore(t, testenv.CoreOptions{Engine: engine.Config{AckWait: 5 * time.Minute}})
	cl := core.Client(t, "t")
	if err := core.Engines[0].Close(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	create, err := cl.Publish(ctx, fsm.Command{Type: fsm.Create, Workspace: "closing"})
	if err != nil {
		t.Fatal(err)
	}
	deadTake(t, core, create.ID)
	e := core.StartEngine(t)
	del, err := cl.Publish(ctx, fsm.Command{Type: fsm.Delete, Workspace: "closing"})
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, "the delete taken and held", func() bool {
		info, err := core.JS.Consumer(ctx, core.Store.Names().CommandStream(), "turnstile-engine")
		return err == nil && info.CachedInfo().NumAckPending == 2
	})
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := core.Store.Outcome(ctx, del.ID); err != nil || ok {
		t.Fatalf("the held delete got an outcome (%v, %v): it must wait for its create", ok, err)
	}
}
