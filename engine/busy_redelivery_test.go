package engine_test

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/turnstile-dev/turnstile/client"
	"github.com/turnstile-dev/turnstile/engine"
	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/internal/testenv"
)

// busyTest is a core whose engine queues at most two commands per
// workspace, with an ack wait that outlasts the test (nothing is
// redelivered but what the test hands back), and a log that tells which
// commands are stuck in hand.
type busyTest struct {
	core *testenv.Core
	log  *retries
	ctx  context.Context
}

func newBusyTest(t *testing.T) *busyTest {
	t.Helper()
	log := newRetries(testenv.Logger(t).Handler())
	core := testenv.StartCore(t, testenv.CoreOptions{Engine: engine.Config{
		MaxPendingPerWorkspace: 2, AckWait: 5 * time.Minute, PinnedTTL: time.Second, Logger: slog.New(log)}})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return &busyTest{core: core, log: log, ctx: ctx}
}

// stick makes command id impossible to record, so that a handling of it
// stays in hand (retrying) until its outcome is stored by someone else:
// its id is put in the event stream's duplicate window on another
// workspace's subject, so its event is refused as stored and never found
// among its workspace's events (as in TestStuckCommandDoesNotStopTheBalance).
func (b *busyTest) stick(t *testing.T, id string) {
	t.Helper()
	stray := nats.NewMsg(b.core.Store.Names().Event("elsewhere"))
	stray.Data = []byte(`{}`)
	stray.Header.Set(jetstream.MsgIDHeader, id)
	if _, err := b.core.JS.PublishMsg(b.ctx, stray); err != nil {
		t.Fatal(err)
	}
}

// storeEvent stores cmd's event on its workspace's head and no outcome,
// as a handling that stopped between the two writes leaves it. msgID is
// the event message's Nats-Msg-Id (the command id, as the engine writes
// it; another when the command's id is already in the duplicate window).
func (b *busyTest) storeEvent(t *testing.T, cmd fsm.Command, msgID string) events.Envelope {
	t.Helper()
	h, err := b.core.Store.Load(b.ctx, cmd.Workspace)
	if err != nil {
		t.Fatal(err)
	}
	d := fsm.Decide(h.State, cmd)
	if d.Outcome != fsm.Accepted {
		t.Fatalf("setup: %s not accepted: %+v", cmd.ID, d)
	}
	env := events.NewEnvelope(cmd.ID+"-event", h.State, *d.Event, cmd, time.Now())
	data, err := events.Codec{}.Encode(env)
	if err != nil {
		t.Fatal(err)
	}
	m := nats.NewMsg(b.core.Store.Names().Event(cmd.Workspace))
	m.Data = data
	m.Header.Set(jetstream.MsgIDHeader, msgID)
	if ack, err := b.core.JS.PublishMsg(b.ctx, m, jetstream.WithExpectLastSequencePerSubject(h.StreamSeq)); err != nil || ack.Duplicate {
		t.Fatalf("setup: store %s's event: %+v, %v", cmd.ID, ack, err)
	}
	return env
}

func (b *busyTest) configure(t *testing.T, cl *client.Client, ws, n string) fsm.Command {
	t.Helper()
	c, err := cl.Publish(b.ctx, fsm.Command{Type: fsm.Configure, Workspace: ws, Spec: &fsm.Spec{Env: map[string]string{"N": n}}})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (b *busyTest) outcome(t *testing.T, id string) (events.OutcomeRecord, bool) {
	t.Helper()
	o, ok, err := b.core.Store.Outcome(b.ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	return o, ok
}

func (b *busyTest) waitOutcome(t *testing.T, id string) events.OutcomeRecord {
	t.Helper()
	var o events.OutcomeRecord
	testenv.Eventually(t, time.Minute, "the outcome of "+id, func() bool {
		var ok bool
		o, ok = b.outcome(t, id)
		return ok
	})
	return o
}

// deliveries counts the deliveries, redeliveries included, of ws's
// partition consumer (its consumer sequence).
func (b *busyTest) deliveries(t *testing.T, ws string) uint64 {
	t.Helper()
	info, err := partConsumer(t, b.core.JS, ws).Info(b.ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info.Delivered.Consumer
}

// A redelivery is never refused busy. Engine A stored command C1's event
// and stopped before its outcome, handing C1 back; engine B recovered a
// copy of every unfinished command of the workspace, more than its limit,
// and is deciding C1's copy when C1's redelivery arrives. Refused busy, the
// redelivery took C1's one outcome, and the copy, finding C1's event at the
// head, got that busy outcome back: an applied command answered "refused
// without being decided". The redelivery is queued past the limit instead
// and settled with the accepted outcome the copy records.
func TestRedeliveryNeverRefusedBusy(t *testing.T) {
	b := newBusyTest(t)
	const ws = "busy-redelivery"
	cl := b.core.Client(t, "t")
	if o := send(t, cl, fsm.Command{Type: fsm.Create, Workspace: ws}); o.Outcome != fsm.Accepted {
		t.Fatalf("create: %+v", o)
	}
	if err := b.core.Engines[0].Close(); err != nil {
		t.Fatal(err)
	}
	cmds := []fsm.Command{b.configure(t, cl, ws, "1"), b.configure(t, cl, ws, "2"), b.configure(t, cl, ws, "3")}
	c1 := cmds[0]
	// B's copy of C1 stays in hand until C1's event is stored below.
	b.stick(t, c1.ID)

	// Engine A takes the three and goes quiet.
	_, djs := b.core.NATS.Connect(t)
	batch, err := partConsumer(t, djs, ws).Fetch(3, jetstream.FetchMaxWait(10*time.Second), jetstream.FetchPriorityGroup(engine.PriorityGroup))
	if err != nil {
		t.Fatal(err)
	}
	var taken []jetstream.Msg
	for m := range batch.Messages() {
		taken = append(taken, m)
	}
	if len(taken) != 3 || taken[0].Headers().Get(jetstream.MsgIDHeader) != c1.ID {
		t.Fatalf("setup: engine A took %d commands, want the three configures", len(taken))
	}

	// Engine B recovers copies of the three: C1's is in hand, two wait
	// (the limit).
	b.core.StartEngine(t)
	testenv.Eventually(t, 30*time.Second, "B's copy of C1 in hand", func() bool { return b.log.all([]string{c1.ID}) })

	// A hands C1 back; its redelivery reaches B. A command published after
	// it is refused busy: the limit was in force when the redelivery came.
	before := b.deliveries(t, ws)
	if err := taken[0].Nak(); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, "C1 redelivered", func() bool { return b.deliveries(t, ws) > before })
	d := b.configure(t, cl, ws, "4")
	if o := b.waitOutcome(t, d.ID); !isRejection(o, fsm.CodeBusy) || o.Reason != "overflow" {
		t.Fatalf("a command beyond the limit: %+v, want refused busy (overflow)", o)
	}
	if o, ok := b.outcome(t, c1.ID); ok {
		t.Fatalf("C1, whose copy is in hand, has outcome %s %+v (reason %q) already: its redelivery was refused", o.Outcome, o.Rejection, o.Reason)
	}

	// A's event of C1 (the id is in the duplicate window: stored under
	// another message id). B's copy finds it at the head.
	env := b.storeEvent(t, c1, "a:"+c1.ID)
	o := b.waitOutcome(t, c1.ID)
	if o.Outcome != fsm.Accepted || o.EventSeq != env.Seq {
		t.Fatalf("C1's event is stored, its outcome is %s %+v (reason %q), want accepted at event %d", o.Outcome, o.Rejection, o.Reason, env.Seq)
	}
	for _, c := range cmds[1:] {
		if o := b.waitOutcome(t, c.ID); o.Outcome != fsm.Accepted {
			t.Fatalf("%s: %+v", c.ID, o)
		}
	}
	want := []string{"", c1.ID, cmds[1].ID, cmds[2].ID}
	got := eventCommands(t, b.core, ws)
	if len(got) > 0 {
		want[0] = got[0] // the create
	}
	if !slices.Equal(got, want) {
		t.Fatalf("events of commands %v, want the create, then %v", got, want[1:])
	}
}

// A first delivery beyond the limit is not refused busy when its command's
// event is its workspace's head: the command was applied by a handling that
// has not stored its outcome (a NATS server back with its consumer's state
// from before a crash delivers such a command as if for the first time; a
// command id sent again past the duplicate window is a new message). It is
// handed back, and its redelivery is recorded as the accepted command it
// was.
func TestFirstDeliveryWithItsEventStoredNotRefusedBusy(t *testing.T) {
	b := newBusyTest(t)
	const ws = "busy-applied"
	cl := b.core.Client(t, "t")
	if o := send(t, cl, fsm.Command{Type: fsm.Create, Workspace: ws}); o.Outcome != fsm.Accepted {
		t.Fatalf("create: %+v", o)
	}
	// S holds the workspace; two more wait behind it (the limit).
	s, err := cl.Prepare(fsm.Command{Type: fsm.Configure, Workspace: ws, Spec: &fsm.Spec{Env: map[string]string{"N": "s"}}})
	if err != nil {
		t.Fatal(err)
	}
	b.stick(t, s.ID)
	if _, err := cl.Publish(b.ctx, s); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, "S in hand", func() bool { return b.log.all([]string{s.ID}) })
	waiting := []fsm.Command{b.configure(t, cl, ws, "1"), b.configure(t, cl, ws, "2")}

	// C's event is stored, its outcome not; then C comes, beyond the limit.
	c, err := cl.Prepare(fsm.Command{Type: fsm.Configure, Workspace: ws, Spec: &fsm.Spec{Env: map[string]string{"N": "c"}}})
	if err != nil {
		t.Fatal(err)
	}
	env := b.storeEvent(t, c, c.ID)
	before := b.deliveries(t, ws)
	if _, err := cl.Publish(b.ctx, c); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, "C refused, or handed back and delivered again", func() bool {
		_, ok := b.outcome(t, c.ID)
		return ok || b.deliveries(t, ws) >= before+2
	})
	if o, ok := b.outcome(t, c.ID); ok {
		t.Fatalf("C, whose event is the head, has outcome %s %+v (reason %q)", o.Outcome, o.Rejection, o.Reason)
	}

	// S is settled (an outcome stored for it by hand); the rest follow.
	so := events.OutcomeRecord{CommandID: s.ID, Workspace: ws, CommandType: s.Type, Outcome: fsm.Rejected,
		Rejection: fsm.Invalid(s.Type, "settled by the test")}
	// Stored by hand under a message id of its own: S's id is taken in
	// the window by the stray message stick planted, which refuses an
	// outcome without an event under it (events.ErrEventStored).
	om := nats.NewMsg(b.core.Store.Names().Outcome(s.ID))
	if om.Data, err = events.EncodeOutcome(so); err != nil {
		t.Fatal(err)
	}
	om.Header.Set(jetstream.MsgIDHeader, "settle-"+s.ID)
	if _, err := b.core.JS.PublishMsg(b.ctx, om); err != nil {
		t.Fatalf("setup: settle S: %v", err)
	}
	o := b.waitOutcome(t, c.ID)
	if o.Outcome != fsm.Accepted || o.EventSeq != env.Seq {
		t.Fatalf("C's event is stored, its outcome is %s %+v (reason %q), want accepted at event %d", o.Outcome, o.Rejection, o.Reason, env.Seq)
	}
	for _, w := range waiting {
		if o := b.waitOutcome(t, w.ID); o.Outcome != fsm.Accepted {
			t.Fatalf("%s: %+v", w.ID, o)
		}
	}
	if got := eventCommands(t, b.core, ws); len(got) != 4 || got[1] != c.ID ||
		!slices.Equal(got[2:], []string{waiting[0].ID, waiting[1].ID}) {
		t.Fatalf("events of commands %v, want the create, C, %s and %s", got, waiting[0].ID, waiting[1].ID)
	}
	testenv.Eventually(t, 30*time.Second, "every command handled", func() bool { return consumerDone(b.core) })
}

// A command beyond its workspace's limit whose id is a UUIDv7 dated ahead
// is refused as dated ahead with nothing stored, not refused busy: a busy
// refusal stored under it would stand when a copy of the id comes again,
// unseen, once its time has come (unseen.go).
func TestAheadDatedIDBeyondTheLimitStoresNothing(t *testing.T) {
	b := newBusyTest(t)
	const ws = "busy-ahead"
	cl := b.core.Client(t, "t")
	if o := send(t, cl, fsm.Command{Type: fsm.Create, Workspace: ws}); o.Outcome != fsm.Accepted {
		t.Fatalf("create: %+v", o)
	}
	s, err := cl.Prepare(fsm.Command{Type: fsm.Configure, Workspace: ws, Spec: &fsm.Spec{Env: map[string]string{"N": "s"}}})
	if err != nil {
		t.Fatal(err)
	}
	b.stick(t, s.ID)
	if _, err := cl.Publish(b.ctx, s); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, "S in hand", func() bool { return b.log.all([]string{s.ID}) })
	waiting := []fsm.Command{b.configure(t, cl, ws, "1"), b.configure(t, cl, ws, "2")}
	over := b.configure(t, cl, ws, "3")
	if o := b.waitOutcome(t, over.ID); !isRejection(o, fsm.CodeBusy) {
		t.Fatalf("setup: a command beyond the limit: %+v, want busy", o)
	}

	id := v7At(t, time.Now().Add(10*time.Minute))
	o, err := cl.SendNew(b.ctx, fsm.Command{ID: id, Type: fsm.Configure, Workspace: ws, Spec: &fsm.Spec{Env: map[string]string{"N": "ahead"}}})
	if err != nil {
		t.Fatal(err)
	}
	if !isRejection(o, fsm.CodeInvalid) || !strings.Contains(o.Rejection.Message, "dated") {
		t.Fatalf("an id dated ahead beyond the limit: %+v, want refused as dated ahead", o)
	}
	if o, ok := b.outcome(t, id); ok {
		t.Fatalf("an outcome is stored under the id dated ahead: %s %+v", o.Outcome, o.Rejection)
	}

	// S settled by hand (its id is taken by stick's stray message); the
	// rest follow.
	so := events.OutcomeRecord{CommandID: s.ID, Workspace: ws, CommandType: s.Type, Outcome: fsm.Rejected,
		Rejection: fsm.Invalid(s.Type, "settled by the test")}
	om := nats.NewMsg(b.core.Store.Names().Outcome(s.ID))
	if om.Data, err = events.EncodeOutcome(so); err != nil {
		t.Fatal(err)
	}
	om.Header.Set(jetstream.MsgIDHeader, "settle-"+s.ID)
	if _, err := b.core.JS.PublishMsg(b.ctx, om); err != nil {
		t.Fatalf("settle S: %v", err)
	}
	for _, w := range waiting {
		if o := b.waitOutcome(t, w.ID); o.Outcome != fsm.Accepted {
			t.Fatalf("%s: %+v", w.ID, o)
		}
	}
	testenv.Eventually(t, 30*time.Second, "every command handled", func() bool { return consumerDone(b.core) })
}
