package events_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/synadia-io/orbit.go/jetstreamext"

	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/internal/testenv"
)

// commitEnv opens a store on a fresh embedded NATS.
func commitEnv(t *testing.T) (*events.Store, jetstream.JetStream) {
	t.Helper()
	n := testenv.StartNATS(t, testenv.NATSOptions{})
	_, js := n.Connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	names := events.NewNames("")
	if err := events.EnsureStreams(ctx, js, names, events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	store, err := events.OpenStore(ctx, js, names, events.Codec{})
	if err != nil {
		t.Fatal(err)
	}
	return store, js
}

// decided is the write the engine makes for cmd on h.
func decided(t *testing.T, h events.Head, cmd fsm.Command) events.Write {
	t.Helper()
	d := fsm.Decide(h.State, cmd)
	now := time.Now().UTC()
	w := events.Write{Outcome: events.OutcomeRecord{CommandID: cmd.ID, Workspace: cmd.Workspace, CommandType: cmd.Type,
		Outcome: d.Outcome, Rejection: d.Rejection, Generation: h.State.Generation, State: h.State.Status,
		ReceivedAt: now, DecidedAt: now}}
	if d.Outcome == fsm.Accepted {
		env := events.NewEnvelope(cmd.ID+"-event", h.State, *d.Event, cmd, now)
		w.Event, w.Expected = &env, h.StreamSeq
		w.Outcome.EventSeq, w.Outcome.Generation, w.Outcome.State = env.Seq, env.State.Generation, env.State.Status
	}
	return w
}

func load(t *testing.T, store *events.Store, ws string) events.Head {
	t.Helper()
	h, err := store.Load(context.Background(), ws)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func eventIDs(t *testing.T, store *events.Store, ws string) []string {
	t.Helper()
	var got []string
	if err := store.History(context.Background(), ws, func(e events.Envelope) error {
		got = append(got, e.CommandID)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return got
}

// TestCommit runs through both ways Commit writes: plain publishes, and
// one atomic batch (from one event on).
func TestCommit(t *testing.T) {
	t.Run("Plain", func(t *testing.T) { testCommit(t, events.CommitOptions{}) })
	t.Run("Atomic", func(t *testing.T) { testCommit(t, events.CommitOptions{AtomicFrom: 1}) })
}

func testCommit(t *testing.T, opt events.CommitOptions) {
	store, js := commitEnv(t)
	ctx := context.Background()
	create := func(ws string) fsm.Command { return fsm.Command{ID: "create-" + ws, Type: fsm.Create, Workspace: ws} }

	t.Run("OK", func(t *testing.T) {
		// Several workspaces' events and an outcome alone, in one call.
		ws := []events.Write{decided(t, load(t, store, "a"), create("a")), decided(t, load(t, store, "b"), create("b")),
			decided(t, load(t, store, "a"), fsm.Command{ID: "start-a", Type: fsm.Start, Workspace: "a"})}
		if ws[2].Event != nil {
			t.Fatal("setup: a start of a missing workspace appends")
		}
		res, _ := store.Commit(ctx, ws, opt)
		for i, r := range res {
			if r.Err != nil || r.Existing != nil || r.Duplicate || (ws[i].Event != nil) != (r.EventSeq > 0) {
				t.Fatalf("write %d: %+v", i, r)
			}
			if o, ok, err := store.Outcome(ctx, ws[i].Outcome.CommandID); err != nil || !ok || o.Outcome != ws[i].Outcome.Outcome {
				t.Fatalf("outcome of %s: %+v %v %v", ws[i].Outcome.CommandID, o, ok, err)
			}
		}
		if h := load(t, store, "a"); h.StreamSeq != res[0].EventSeq || h.Last.CommandID != "create-a" {
			t.Fatalf("head of a %+v, want the create at %d", h, res[0].EventSeq)
		}
	})

	t.Run("Overlapping", func(t *testing.T) {
		// The engine's committer starts a batch while the previous one's
		// outcomes are still awaited; each must come out as if alone,
		// whichever is awaited first.
		first := store.StartCommit(ctx, []events.Write{decided(t, load(t, store, "o1"), create("o1")),
			decided(t, load(t, store, "o2"), create("o2"))}, opt)
		stale := decided(t, load(t, store, "o1"), create("o1-again")) // o1 is created: rejected, an outcome alone
		second := store.StartCommit(ctx, []events.Write{decided(t, load(t, store, "o3"), create("o3")), stale}, opt)
		res2, _ := second.Wait(ctx)
		res1, _ := first.Wait(ctx)
		for i, r := range append(res1, res2...) {
			if r.Err != nil || r.Existing != nil || r.Duplicate || (i < 3) != (r.EventSeq > 0) {
				t.Fatalf("write %d: %+v", i, r)
			}
		}
		for _, id := range []string{"create-o1", "create-o2", "create-o3", "create-o1-again"} {
			if _, ok, err := store.Outcome(ctx, id); err != nil || !ok {
				t.Fatalf("outcome of %s: %v %v", id, ok, err)
			}
		}
		if got := eventIDs(t, store, "o1"); !slices.Equal(got, []string{"create-o1"}) {
			t.Fatalf("events of o1 %v, want its create alone", got)
		}
	})

	t.Run("MoreThanOneBatch", func(t *testing.T) {
		// Past MaxCommitWrites the writes are split; every result is
		// still in its write's place.
		n := events.MaxCommitWrites + 3
		ws := make([]events.Write, n)
		for i := range ws {
			name := fmt.Sprintf("m%d", i)
			ws[i] = decided(t, events.Head{}, create(name))
		}
		res, _ := store.Commit(ctx, ws, opt)
		if len(res) != n {
			t.Fatalf("%d results for %d writes", len(res), n)
		}
		for _, i := range []int{0, events.MaxCommitWrites - 1, events.MaxCommitWrites, n - 1} {
			h := load(t, store, fmt.Sprintf("m%d", i))
			if res[i].Err != nil || h.StreamSeq != res[i].EventSeq {
				t.Fatalf("write %d: %+v, head at %d", i, res[i], h.StreamSeq)
			}
		}
	})

	t.Run("ErrConflict", func(t *testing.T) {
		stale := load(t, store, "c")
		if res, _ := store.Commit(ctx, []events.Write{decided(t, stale, create("c"))}, opt); res[0].Err != nil {
			t.Fatal(res[0].Err)
		}
		cfg := fsm.Command{ID: "configure-c", Type: fsm.Configure, Workspace: "c", Spec: &fsm.Spec{Env: map[string]string{"N": "1"}}}
		h := load(t, store, "c")
		// Decided on a state another writer has since left.
		w := decided(t, h, cfg)
		w.Expected = stale.StreamSeq
		res, st := store.Commit(ctx, []events.Write{w}, opt)
		if !errors.Is(res[0].Err, events.ErrConflict) {
			t.Fatalf("got %+v, want ErrConflict", res[0])
		}
		if st.Batch != 0 {
			t.Fatalf("a refused batch timed as written: %+v", st)
		}
		if _, ok, _ := store.Outcome(ctx, cfg.ID); ok {
			t.Fatal("a conflicting write stored its outcome")
		}
		if got := eventIDs(t, store, "c"); !slices.Equal(got, []string{"create-c"}) {
			t.Fatalf("events of commands %v, want the create's alone", got)
		}
	})

	t.Run("Existing", func(t *testing.T) {
		h := load(t, store, "d")
		first := decided(t, h, create("d"))
		if res, _ := store.Commit(ctx, []events.Write{first}, opt); res[0].Err != nil {
			t.Fatal(res[0].Err)
		}
		// The same command handled again, on the state before it: the
		// stored outcome comes back and nothing is written, in a batch
		// with another workspace's write, which still lands.
		again := decided(t, h, create("d"))
		other := decided(t, load(t, store, "e"), create("e"))
		res, st := store.Commit(ctx, []events.Write{again, other}, opt)
		if res[0].Err != nil || res[0].Existing == nil || res[0].Existing.DecidedAt != first.Outcome.DecidedAt {
			t.Fatalf("second handling: %+v, want the first outcome", res[0])
		}
		if res[1].Err != nil || res[1].Existing != nil || res[1].EventSeq == 0 {
			t.Fatalf("the other workspace's write: %+v", res[1])
		}
		if !st.Fallback {
			t.Fatal("the refused batch was not reported as a fallback")
		}
		if got := eventIDs(t, store, "d"); !slices.Equal(got, []string{"create-d"}) {
			t.Fatalf("events of commands %v, want one create", got)
		}
	})

	t.Run("Duplicate", func(t *testing.T) {
		// An event stored without its outcome (a writer that died between
		// the two, or wrote before they went together): the outcome alone
		// is recorded, against the event already there.
		h := load(t, store, "f")
		w := decided(t, h, create("f"))
		m, err := store.EventMsgForTest(*w.Event, w.Expected)
		if err != nil {
			t.Fatal(err)
		}
		ack, err := js.PublishMsg(ctx, m)
		if err != nil {
			t.Fatal(err)
		}
		res, _ := store.Commit(ctx, []events.Write{w}, opt)
		if res[0].Err != nil || !res[0].Duplicate || res[0].EventSeq != ack.Sequence {
			t.Fatalf("got %+v, want the stored event at %d as a duplicate", res[0], ack.Sequence)
		}
		if _, ok, _ := store.Outcome(ctx, w.Outcome.CommandID); !ok {
			t.Fatal("outcome not recorded")
		}
		if got := eventIDs(t, store, "f"); len(got) != 1 {
			t.Fatalf("events of commands %v, want one", got)
		}
	})

	t.Run("DuplicateDecidedOnAnOlderState", func(t *testing.T) {
		// An earlier try stored the command's event, decided on a newer
		// state than this handling had: the outcome recorded is the stored
		// event's, not the write's.
		for _, cmd := range []fsm.Command{create("h"),
			{ID: "configure-h", Type: fsm.Configure, Workspace: "h", Spec: &fsm.Spec{Env: map[string]string{"N": "1"}}}} {
			if res, _ := store.Commit(ctx, []events.Write{decided(t, load(t, store, "h"), cmd)}, opt); res[0].Err != nil {
				t.Fatal(res[0].Err)
			}
		}
		stop := fsm.Command{ID: "stop-h", Type: fsm.Stop, Workspace: "h"}
		earlier := decided(t, load(t, store, "h"), stop)
		m, err := store.EventMsgForTest(*earlier.Event, earlier.Expected)
		if err != nil {
			t.Fatal(err)
		}
		ack, err := js.PublishMsg(ctx, m)
		if err != nil {
			t.Fatal(err)
		}
		// This handling's view: the workspace before the configure.
		old, err := store.LoadBefore(ctx, "h", earlier.Expected)
		if err != nil {
			t.Fatal(err)
		}
		w := decided(t, old, stop)
		if w.Event == nil || w.Outcome.EventSeq == earlier.Outcome.EventSeq {
			t.Fatalf("the stale decision %+v should differ from the stored event's seq %d", w.Outcome, earlier.Outcome.EventSeq)
		}
		res, _ := store.Commit(ctx, []events.Write{w}, opt)
		if res[0].Err != nil || !res[0].Duplicate || res[0].EventSeq != ack.Sequence {
			t.Fatalf("got %+v, want the stored event at %d as a duplicate", res[0], ack.Sequence)
		}
		got, ok, err := store.Outcome(ctx, stop.ID)
		if err != nil || !ok {
			t.Fatalf("outcome: %v, %v", ok, err)
		}
		want := earlier.Outcome
		if got.EventSeq != want.EventSeq || got.Generation != want.Generation || got.State != want.State || got.Outcome != fsm.Accepted {
			t.Fatalf("recorded outcome seq %d gen %d %s %s; want the stored event's: seq %d gen %d %s accepted",
				got.EventSeq, got.Generation, got.State, got.Outcome, want.EventSeq, want.Generation, want.State)
		}
		if r := res[0].Recorded; r == nil || r.EventSeq != want.EventSeq || r.Generation != want.Generation || r.State != want.State {
			t.Fatalf("Written.Recorded %+v; want the stored outcome", r)
		}
	})

	t.Run("OutcomeCheckedFirst", func(t *testing.T) {
		// Events and outcomes are separate writes: an event whose command
		// already has an outcome must not land even where neither its
		// compare-and-set nor its message id refuses it (a command id
		// sent again past the duplicate window, decided on a newer
		// state). Here the event's message id is another's.
		if res, _ := store.Commit(ctx, []events.Write{decided(t, load(t, store, "g"), create("g"))}, opt); res[0].Err != nil {
			t.Fatal(res[0].Err)
		}
		again := decided(t, load(t, store, "g"), fsm.Command{ID: "create-g", Type: fsm.Delete, Workspace: "g"})
		if again.Event == nil {
			t.Fatal("setup: the delete is not accepted")
		}
		again.Event.CommandID = "not-create-g"
		res, _ := store.Commit(ctx, []events.Write{again}, opt)
		if res[0].Err != nil || res[0].Existing == nil || res[0].Existing.CommandType != fsm.Create {
			t.Fatalf("got %+v, want the create's outcome", res[0])
		}
		if got := eventIDs(t, store, "g"); !slices.Equal(got, []string{"create-g"}) {
			t.Fatalf("events of commands %v, want the create's alone", got)
		}
	})

	t.Run("ErrBadInput", func(t *testing.T) {
		// An outcome that cannot be encoded: a clear error, nothing stored.
		bad := events.Write{Outcome: events.OutcomeRecord{CommandID: "no workspace!"}}
		res, _ := store.Commit(ctx, []events.Write{bad}, opt)
		if res[0].Err == nil {
			t.Fatalf("got %+v, want an error", res[0])
		}
	})
}

// What makes handling a command that another engine may still be handling
// safe: once the command has an outcome, another writer's write of it is
// refused whole, even when its event's compare-and-set is current (it
// decided on the newer state, and whatever it decided there is accepted:
// here a delete under the configure's id stands for it) and the message
// ids no longer dedupe it (past the duplicate window).
func TestSecondHandlingStoresNothing(t *testing.T) {
	store, js := commitEnv(t)
	var opt events.CommitOptions
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg := fsm.Command{ID: "configure-twice", Type: fsm.Configure, Workspace: "twice",
		Spec: &fsm.Spec{Env: map[string]string{"N": "1"}}}
	for _, cmd := range []fsm.Command{{ID: "create-twice", Type: fsm.Create, Workspace: "twice"}, cfg} {
		if res, _ := store.Commit(ctx, []events.Write{decided(t, load(t, store, "twice"), cmd)}, opt); res[0].Err != nil {
			t.Fatal(res[0].Err)
		}
	}
	h := load(t, store, "twice")
	late := fsm.Command{ID: cfg.ID, Type: fsm.Delete, Workspace: "twice"}
	w := decided(t, h, late)
	if w.Event == nil {
		t.Fatalf("setup: not accepted on the newer state: %+v", w.Outcome)
	}
	ev, err := store.EventMsgForTest(*w.Event, w.Expected)
	if err != nil {
		t.Fatal(err)
	}
	out, err := store.OutcomeMsgForTest(w.Outcome)
	if err != nil {
		t.Fatal(err)
	}
	ev.Header.Del(jetstream.MsgIDHeader)
	out.Header.Del(jetstream.MsgIDHeader)
	_, err = jetstreamext.PublishMsgBatch(ctx, js, []*nats.Msg{ev, out})
	if err == nil {
		t.Fatal("a second handling of a command stored a second event and outcome")
	}
	if !events.IsWrongLastSequence(err) {
		t.Fatalf("refused for %v, want the outcome's wrong last sequence", err)
	}
	if got := eventIDs(t, store, "twice"); !slices.Equal(got, []string{"create-twice", cfg.ID}) {
		t.Fatalf("events of commands %v, want the create and one configure", got)
	}
	// Through Commit (within the duplicate window) likewise.
	res, _ := store.Commit(ctx, []events.Write{w}, opt)
	if res[0].Err != nil || res[0].Existing == nil || res[0].Existing.CommandType != fsm.Configure {
		t.Fatalf("second handling through Commit: %+v, want the configure's outcome", res[0])
	}
	if got := eventIDs(t, store, "twice"); len(got) != 2 {
		t.Fatalf("events of commands %v, want two", got)
	}
}

// A write marked Atomic goes as one atomic batch in a plain Commit, beside
// plain writes: both land; and with its command's outcome already stored
// (another engine's decision) nothing of it is written.
func TestCommitForcedAtomic(t *testing.T) {
	store, _ := commitEnv(t)
	ctx := context.Background()
	create := func(ws string) fsm.Command { return fsm.Command{ID: "create-" + ws, Type: fsm.Create, Workspace: ws} }
	forced := decided(t, load(t, store, "fa"), create("fa"))
	forced.Atomic = true
	plain := decided(t, load(t, store, "fb"), create("fb"))
	res, _ := store.Commit(ctx, []events.Write{forced, plain}, events.CommitOptions{})
	for i, r := range res {
		if r.Err != nil || r.Existing != nil || r.EventSeq == 0 {
			t.Fatalf("write %d: %+v", i, r)
		}
	}
	for _, id := range []string{"create-fa", "create-fb"} {
		if _, ok, err := store.Outcome(ctx, id); err != nil || !ok {
			t.Fatalf("outcome of %s: %v %v", id, ok, err)
		}
	}

	// Another engine decided the command first and stored its outcome
	// alone; the forced write, decided on the same state, stores nothing.
	h := load(t, store, "fc")
	other := decided(t, h, fsm.Command{ID: "create-fc", Type: fsm.Start, Workspace: "fc"})
	if other.Event != nil {
		t.Fatal("setup: a start of a missing workspace appends")
	}
	if res, _ := store.Commit(ctx, []events.Write{other}, events.CommitOptions{}); res[0].Err != nil {
		t.Fatal(res[0].Err)
	}
	again := decided(t, h, create("fc"))
	again.Atomic = true
	res, _ = store.Commit(ctx, []events.Write{again}, events.CommitOptions{})
	if res[0].Err != nil || res[0].Existing == nil || res[0].Existing.CommandType != fsm.Start {
		t.Fatalf("got %+v, want the stored outcome", res[0])
	}
	if got := eventIDs(t, store, "fc"); len(got) != 0 {
		t.Fatalf("events of commands %v, want none", got)
	}
}

// TestFindEvent: a command's event is found behind later events of its
// workspace, from a time before it; not from a time after it, not under
// another command's id, not for a workspace without events.
func TestFindEvent(t *testing.T) {
	store, _ := commitEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	before := time.Now().Add(-time.Minute)
	var ids []string
	for i, cmd := range []fsm.Command{
		{ID: "find-create", Type: fsm.Create, Workspace: "find"},
		{ID: "find-configure-1", Type: fsm.Configure, Workspace: "find", Spec: &fsm.Spec{Env: map[string]string{"N": "1"}}},
		{ID: "find-configure-2", Type: fsm.Configure, Workspace: "find", Spec: &fsm.Spec{Env: map[string]string{"N": "2"}}},
	} {
		res, _ := store.Commit(ctx, []events.Write{decided(t, load(t, store, "find"), cmd)}, events.CommitOptions{})
		if res[0].Err != nil || res[0].EventSeq == 0 {
			t.Fatalf("command %d: %+v", i, res[0])
		}
		ids = append(ids, cmd.ID)
	}
	env, ok, err := store.FindEvent(ctx, "find", ids[1], before)
	if err != nil || !ok || env.CommandID != ids[1] || env.Seq != 2 {
		t.Fatalf("FindEvent of %s: %+v %v %v, want its event (seq 2)", ids[1], env, ok, err)
	}
	if _, ok, err := store.FindEvent(ctx, "find", ids[1], time.Now().Add(time.Minute)); err != nil || ok {
		t.Fatalf("FindEvent from after every event: found %v, %v; want nothing", ok, err)
	}
	if _, ok, err := store.FindEvent(ctx, "find", "find-nothing", before); err != nil || ok {
		t.Fatalf("FindEvent of a command without an event: found %v, %v; want nothing", ok, err)
	}
	if _, ok, err := store.FindEvent(ctx, "nowhere", ids[0], before); err != nil || ok {
		t.Fatalf("FindEvent on a workspace without events: found %v, %v; want nothing", ok, err)
	}
}
