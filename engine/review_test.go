package engine_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
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
	env := events.NewEnvelope(cmd.ID, h.State, *d.Event, cmd, time.Now())
	o := events.OutcomeRecord{CommandID: cmd.ID, Workspace: cmd.Workspace, CommandType: cmd.Type, Outcome: fsm.Accepted,
		EventSeq: env.Seq, Generation: env.State.Generation, State: env.State.Status}
	if res, _ := core.Store.Commit(ctx, []events.Write{{Event: &env, Expected: h.StreamSeq, Outcome: o}}, events.CommitOptions{}); res[0].Err != nil || res[0].Existing != nil {
		t.Fatalf("append: %+v", res[0])
	}
}

// The engine's head cache must not decide commands that append nothing: a
// start after another engine stopped the workspace is accepted, not a no-op
// against a cached "running".
func TestCachedHeadNeverDecidesWithoutCAS(t *testing.T) {
	core := testenv.StartCore(t, testenv.CoreOptions{})
	cl := core.SystemClient(t, "t")
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
	// One partition: its backlog is pulled as one, as a busy partition's is.
	core := testenv.StartCore(t, testenv.CoreOptions{Partitions: 1, Engine: engine.Config{Metrics: metrics, MaxBatch: 2000, Parallel: 2000}})
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
func deadTake(t *testing.T, core *testenv.Core, ws, wantID string) jetstream.Msg {
	t.Helper()
	cons := partConsumer(t, core.JS, ws)
	batch, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second), jetstream.FetchPriorityGroup(engine.PriorityGroup))
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
// redelivers it only after the ack wait. The next engine handles it at once,
// before the same workspace's later commands (here a delete would be refused
// not_found ahead of its create), without waiting for the redelivery: the
// ack wait here outlasts the test.
func TestOrderSurvivesEngineKill(t *testing.T) {
	core := testenv.StartCore(t, testenv.CoreOptions{Engine: engine.Config{AckWait: 5 * time.Minute}})
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
	deadTake(t, core, "killed", create.ID)
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

// The engine handles a dead engine's command from the stream well before
// the ack wait, and the server's redelivery of it later finds its outcome
// and is acked: nothing is written twice.
func TestRecoveredCommandRedelivered(t *testing.T) {
	const ackWait = 10 * time.Second
	core := testenv.StartCore(t, testenv.CoreOptions{Engine: engine.Config{AckWait: ackWait}})
	cl := core.Client(t, "t")
	if err := core.Engines[0].Close(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	create, err := cl.Publish(ctx, fsm.Command{Type: fsm.Create, Workspace: "again"})
	if err != nil {
		t.Fatal(err)
	}
	deadTake(t, core, "again", create.ID)
	taken := time.Now()
	core.StartEngine(t)
	octx, ocancel := context.WithDeadline(ctx, taken.Add(ackWait*8/10)) // before any redelivery
	o, err := cl.Outcome(octx, create.ID)
	ocancel()
	if err != nil || o.Outcome != fsm.Accepted {
		t.Fatalf("create, before the ack wait: %+v, %v", o, err)
	}
	testenv.Eventually(t, 3*ackWait, "the redelivery acked", func() bool {
		info, err := partConsumer(t, core.JS, "again").Info(ctx)
		return err == nil && info.NumAckPending == 0 && info.NumPending == 0
	})
	if got := eventCommands(t, core, "again"); !slices.Equal(got, []string{create.ID}) {
		t.Fatalf("events of commands %v, want the create's alone", got)
	}
}

// A command that cannot be recorded (here the event stream is gone, so its
// workspace cannot be loaded; an unreadable head event no longer stops a
// load, issue 12 item 5) is retried in place, keeping the workspace's
// order, and the server is told it is in hand, so it is not redelivered
// every ack wait.
func TestRetriedCommandNotRedelivered(t *testing.T) {
	const ackWait = 2 * time.Second // beats every second: a second of slack
	core := testenv.StartCore(t, testenv.CoreOptions{Engine: engine.Config{AckWait: ackWait}})
	cl := core.Client(t, "t")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := core.JS.DeleteStream(ctx, core.Store.Names().EventStream()); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Publish(ctx, fsm.Command{Type: fsm.Create, Workspace: "wedged"}); err != nil {
		t.Fatal(err)
	}
	consumer := func() *jetstream.ConsumerInfo {
		ci, err := partConsumer(t, core.JS, "wedged").Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return ci
	}
	testenv.Eventually(t, 10*time.Second, "the command taken", func() bool { return consumer().NumAckPending == 1 })
	// Two ack waits without a redelivery. A negative can only be
	// watched for a while; the pause paces the polling.
	for end := time.Now().Add(2 * ackWait); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		if ci := consumer(); ci.NumRedelivered != 0 || ci.NumAckPending != 1 {
			t.Fatalf("redelivered %d, ack pending %d: the command in hand was redelivered", ci.NumRedelivered, ci.NumAckPending)
		}
	}
}

// An engine that died between a command's event and its outcome (they are
// written one after the other, docs/reliability.md) left the event alone:
// the command's next handling finds its event at the head of the workspace
// and records the outcome it had, without deciding again or appending a
// second event.
func TestEventWithoutOutcomeRepaired(t *testing.T) {
	core := testenv.StartCore(t, testenv.CoreOptions{})
	cl := core.Client(t, "t")
	send(t, cl, fsm.Command{Type: fsm.Create, Workspace: "half"})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd, err := cl.Prepare(fsm.Command{Type: fsm.Configure, Workspace: "half", Spec: &fsm.Spec{Env: map[string]string{"N": "1"}}})
	if err != nil {
		t.Fatal(err)
	}
	h, err := core.Store.Load(ctx, "half")
	if err != nil {
		t.Fatal(err)
	}
	d := fsm.Decide(h.State, cmd)
	if d.Outcome != fsm.Accepted {
		t.Fatalf("setup: %+v", d)
	}
	// The event as the dead engine wrote it: a CAS append under the
	// command's id, and nothing after it.
	env := events.NewEnvelope("half-event", h.State, *d.Event, cmd, time.Now())
	data, err := events.Codec{}.Encode(env)
	if err != nil {
		t.Fatal(err)
	}
	m := nats.NewMsg(core.Store.Names().Event("half"))
	m.Data = data
	m.Header.Set(jetstream.MsgIDHeader, cmd.ID)
	if _, err := core.JS.PublishMsg(ctx, m, jetstream.WithExpectLastSequencePerSubject(h.StreamSeq)); err != nil {
		t.Fatal(err)
	}
	o := send(t, cl, cmd)
	if o.Outcome != fsm.Accepted || o.EventSeq != env.Seq || o.Generation != env.State.Generation {
		t.Fatalf("outcome %+v, want accepted with the stored event's seq %d", o, env.Seq)
	}
	if got := eventCommands(t, core, "half"); len(got) != 2 || got[1] != cmd.ID {
		t.Fatalf("events of commands %v, want the create and one configure", got)
	}
}

// A command whose event a dead engine stored without its outcome, after
// which another engine appended a later command's event on top: handled
// again, it is recorded as the accepted command it was (its event's seq),
// not decided a second time on the newer state beside its event
// (reliability.TestTwoServes saw "command … has an event but outcome …
// noop"). With the default duplicate window, X's second event is refused
// by its id (events.ErrEventStored) and the engine then looks for the
// first; with a window shorter than findEventSkew it looks before deciding.
// With noop, a later command Z brings the workspace back to X's spec, so X
// decided again would be a no-op: no second event for the window to
// refuse, and the engine must look all the same.
func TestEventWithoutOutcomeBehindTheHead(t *testing.T) {
	for _, window := range []time.Duration{0, time.Second} {
		for _, noop := range []bool{false, true} {
			t.Run(fmt.Sprintf("window=%v/noop=%v", window, noop), func(t *testing.T) {
				testEventWithoutOutcomeBehindTheHead(t, window, noop)
			})
		}
	}
}

func testEventWithoutOutcomeBehindTheHead(t *testing.T, window time.Duration, noop bool) {
	core := testenv.StartCore(t, testenv.CoreOptions{DuplicateWindow: window})
	cl := core.Client(t, "t")
	send(t, cl, fsm.Command{Type: fsm.Create, Workspace: "behind"})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := core.Engines[0].Close(); err != nil {
		t.Fatal(err)
	}

	// X reaches an engine that stores its event and dies: delivered, never
	// acked, no outcome.
	x, err := cl.Publish(ctx, fsm.Command{Type: fsm.Configure, Workspace: "behind", Spec: &fsm.Spec{Env: map[string]string{"N": "1"}}})
	if err != nil {
		t.Fatal(err)
	}
	dnc, djs := core.NATS.Connect(t)
	dead := partConsumer(t, djs, "behind")
	batch, err := dead.Fetch(1, jetstream.FetchMaxWait(10*time.Second), jetstream.FetchPriorityGroup(engine.PriorityGroup))
	if err != nil {
		t.Fatal(err)
	}
	got := 0
	for m := range batch.Messages() {
		if m.Headers().Get(jetstream.MsgIDHeader) != x.ID {
			t.Fatalf("the dead engine took %q, want %q", m.Headers().Get(jetstream.MsgIDHeader), x.ID)
		}
		got++
	}
	if got != 1 {
		t.Fatalf("the dead engine took %d commands", got)
	}
	appendEvent := func(cmd fsm.Command, id string) events.Envelope {
		t.Helper()
		h, err := core.Store.Load(ctx, "behind")
		if err != nil {
			t.Fatal(err)
		}
		d := fsm.Decide(h.State, cmd)
		if d.Outcome != fsm.Accepted {
			t.Fatalf("setup: %+v", d)
		}
		env := events.NewEnvelope(id, h.State, *d.Event, cmd, time.Now())
		data, err := events.Codec{}.Encode(env)
		if err != nil {
			t.Fatal(err)
		}
		m := nats.NewMsg(core.Store.Names().Event("behind"))
		m.Data = data
		m.Header.Set(jetstream.MsgIDHeader, cmd.ID)
		if _, err := core.JS.PublishMsg(ctx, m, jetstream.WithExpectLastSequencePerSubject(h.StreamSeq)); err != nil {
			t.Fatal(err)
		}
		return env
	}
	xEnv := appendEvent(x, "x-event")
	dnc.Close()

	// Another engine decides a later command Y on the head holding X's
	// event (its outcome does not matter here).
	y, err := cl.Prepare(fsm.Command{Type: fsm.Configure, Workspace: "behind", Spec: &fsm.Spec{Env: map[string]string{"N": "2"}}})
	if err != nil {
		t.Fatal(err)
	}
	appendEvent(y, "y-event")
	later := []string{y.ID}
	if noop {
		z, err := cl.Prepare(fsm.Command{Type: fsm.Configure, Workspace: "behind", Spec: &fsm.Spec{Env: map[string]string{"N": "1"}}})
		if err != nil {
			t.Fatal(err)
		}
		appendEvent(z, "z-event")
		later = append(later, z.ID)
	}
	if window > 0 {
		// Not synchronization: what is tested is the window having passed,
		// so that no duplicate check can stand in for the engine's look.
		time.Sleep(2 * window)
	}

	// The next engine recovers X.
	core.StartEngine(t)
	var o events.OutcomeRecord
	testenv.Eventually(t, 30*time.Second, "X's outcome", func() bool {
		var ok bool
		o, ok, err = core.Store.Outcome(ctx, x.ID)
		return err == nil && ok
	})
	if o.Outcome != fsm.Accepted || o.EventSeq != xEnv.Seq || o.Generation != xEnv.State.Generation || o.State != xEnv.State.Status {
		t.Fatalf("outcome %+v, want accepted with X's event (seq %d, generation %d, %s)", o, xEnv.Seq, xEnv.State.Generation, xEnv.State.Status)
	}
	if got := eventCommands(t, core, "behind"); len(got) != 2+len(later) || got[1] != x.ID || !slices.Equal(got[2:], later) {
		t.Fatalf("events of commands %v, want the create, X and %v", got, later)
	}
}
