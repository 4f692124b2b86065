package engine_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/turnstile-dev/turnstile/client"
	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/internal/testenv"
)

// countOutcomeGets counts the direct gets of outcome subjects on core's
// server from now on (the outcome check's, the client's lookups).
func countOutcomeGets(t *testing.T, core *testenv.Core) func() int {
	t.Helper()
	nc, _ := core.Connect(t)
	return testenv.DirectGets(t, nc, "."+core.Store.Names().Outcome(""))
}

// A command whose id is a fresh UUIDv7 (client.NewCommandID), delivered
// for the first time, is decided without the outcome check; one with a
// random (v4) id is checked as before. Both are decided once.
func TestUnseenCommandsSkipTheOutcomeCheck(t *testing.T) {
	core := testenv.StartCore(t, testenv.CoreOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// Only the engine's lookups are to be counted: this client waits for
	// the engine's reply and never reads the stored outcome meanwhile
	// (core.Client's reads it after 200 ms, a decision's time on a loaded
	// host, and such a read counted as the engine's check).
	nc, _ := core.Connect(t)
	cl, err := client.New(ctx, nc, client.Options{Actor: "t", PollInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cl.Close() })
	send(t, cl, fsm.Command{Type: fsm.Create, Workspace: "unseen"})
	gets := countOutcomeGets(t, core)
	const n = 20
	for i := range n {
		cmd := fsm.Command{ID: client.NewCommandID(), Type: fsm.Configure, Workspace: "unseen", Spec: &fsm.Spec{Env: map[string]string{"N": string(rune('a' + i))}}}
		o, err := cl.SendNew(ctx, cmd)
		if err != nil || o.Outcome != fsm.Accepted {
			t.Fatalf("configure %d: %+v, %v", i, o, err)
		}
	}
	if got := gets(); got != 0 {
		t.Errorf("%d outcome lookups for %d commands with fresh UUIDv7 ids, want 0", got, n)
	}
	for i := range n {
		cmd := fsm.Command{ID: uuid.NewString(), Type: fsm.Configure, Workspace: "unseen", Spec: &fsm.Spec{Env: map[string]string{"M": string(rune('a' + i))}}}
		o, err := cl.SendNew(ctx, cmd)
		if err != nil || o.Outcome != fsm.Accepted {
			t.Fatalf("configure v4 %d: %+v, %v", i, o, err)
		}
	}
	if got := gets(); got < n {
		t.Errorf("%d outcome lookups for %d commands with random ids, want one each", got, n)
	}
	checkLog(t, core)
}

// A UUIDv7 id dated ahead of the server (beyond a quarter of the duplicate
// window) is refused, with nothing stored under it: sent again once its
// time has come, it would skip the outcome check.
func TestAheadDatedIDIsRefusedWithNothingStored(t *testing.T) {
	core := testenv.StartCore(t, testenv.CoreOptions{})
	cl := core.Client(t, "t")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	send(t, cl, fsm.Command{Type: fsm.Create, Workspace: "ahead"})
	before, err := core.Store.Load(ctx, "ahead")
	if err != nil {
		t.Fatal(err)
	}
	id := v7At(t, time.Now().Add(10*time.Minute))
	o, err := cl.SendNew(ctx, fsm.Command{ID: id, Type: fsm.Configure, Workspace: "ahead", Spec: &fsm.Spec{Env: map[string]string{"A": "1"}}})
	if err != nil {
		t.Fatal(err)
	}
	if !isRejection(o, fsm.CodeInvalid) || !strings.Contains(o.Rejection.Message, "dated") {
		t.Fatalf("outcome %+v, want a refusal naming the id's date", o)
	}
	if _, ok, err := core.Store.Outcome(ctx, id); err != nil || ok {
		t.Fatalf("an outcome is stored under the refused id (found %v, %v)", ok, err)
	}
	after, err := core.Store.Load(ctx, "ahead")
	if err != nil {
		t.Fatal(err)
	}
	if after.StreamSeq != before.StreamSeq {
		t.Fatalf("the workspace moved from %d to %d", before.StreamSeq, after.StreamSeq)
	}
	// A few seconds ahead (clocks a little apart) is taken.
	o, err = cl.SendNew(ctx, fsm.Command{ID: v7At(t, time.Now().Add(3*time.Second)), Type: fsm.Configure, Workspace: "ahead", Spec: &fsm.Spec{Env: map[string]string{"A": "2"}}})
	if err != nil || o.Outcome != fsm.Accepted {
		t.Fatalf("an id 3 s ahead: %+v, %v", o, err)
	}
}

// A command id sent again in a new message once the duplicate window has
// passed is not decided again: its second copy is too old for "unseen" and
// is checked, finding the first one's outcome. The window is short here so
// that the stream takes the second message.
func TestUnseenIDSentAgainPastTheWindow(t *testing.T) {
	const window = 2 * time.Second
	core := testenv.StartCore(t, testenv.CoreOptions{DuplicateWindow: window})
	cl := core.Client(t, "t")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	send(t, cl, fsm.Command{Type: fsm.Create, Workspace: "again"})
	cmd := fsm.Command{ID: client.NewCommandID(), Type: fsm.Configure, Workspace: "again", Spec: &fsm.Spec{Env: map[string]string{"X": "1"}}}
	first, err := cl.SendNew(ctx, cmd)
	if err != nil || first.Outcome != fsm.Accepted {
		t.Fatalf("first: %+v, %v", first, err)
	}
	// Move the workspace on, so that the command decided again would be
	// accepted again (a second event).
	send(t, cl, fsm.Command{Type: fsm.Configure, Workspace: "again", Spec: &fsm.Spec{Env: map[string]string{"X": "2"}}})
	head, err := core.Store.Load(ctx, "again")
	if err != nil {
		t.Fatal(err)
	}
	data, err := events.EncodeCommand(cmd)
	if err != nil {
		t.Fatal(err)
	}
	nc, js := core.Connect(t)
	reply := "_INBOX.again." + cmd.ID
	sub, err := nc.SubscribeSync(reply)
	if err != nil {
		t.Fatal(err)
	}
	// The stream takes the same id again once the window has passed.
	testenv.Eventually(t, 30*time.Second, "the command stream to take the id again", func() bool {
		m := nats.NewMsg(core.Store.Names().Command("again"))
		m.Data = data
		m.Header.Set(jetstream.MsgIDHeader, cmd.ID)
		m.Header.Set(events.ReplyHeader, reply)
		ack, err := js.PublishMsg(ctx, m)
		if err != nil {
			t.Fatal(err)
		}
		return !ack.Duplicate
	})
	rm, err := sub.NextMsg(30 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	got, err := events.DecodeOutcome(rm.Data)
	if err != nil {
		t.Fatal(err)
	}
	if got.Outcome != fsm.Accepted || got.EventSeq != first.EventSeq {
		t.Fatalf("sent again past the window: %+v, want the first outcome (event %d)", got, first.EventSeq)
	}
	after, err := core.Store.Load(ctx, "again")
	if err != nil {
		t.Fatal(err)
	}
	if after.StreamSeq != head.StreamSeq {
		t.Fatalf("the command was decided again: the workspace moved from %d to %d", head.StreamSeq, after.StreamSeq)
	}
	checkLog(t, core)
}

// v7At is a UUIDv7 dated t.
func v7At(t *testing.T, at time.Time) string {
	t.Helper()
	u, err := uuid.NewV7()
	if err != nil {
		t.Fatal(err)
	}
	ms := uint64(at.UnixMilli())
	for i := range 6 {
		u[i] = byte(ms >> (8 * (5 - i)))
	}
	return u.String()
}

// The bounds of "unseen" (unseen.go): within a quarter of the shorter
// duplicate window of the id's time, either side, and decided within a
// quarter of it of being stored; the window is read again from the streams
// (an operator may lower the command stream's).
func TestUnseenBounds(t *testing.T) {
	core := testenv.StartCore(t, testenv.CoreOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	e := core.Engines[0]
	now := time.Now()
	at := func(d time.Duration) fsm.Command {
		return fsm.Command{ID: v7At(t, now.Add(d)), Type: fsm.Configure, Workspace: "bounds"}
	}
	// W is 2 minutes: W/4 is 30 s.
	for _, c := range []struct {
		name        string
		idAt, store time.Duration
		want        bool
	}{
		{"fresh", 0, 0, true},
		{"stored 20 s after its time", -20 * time.Second, 0, true},
		{"stored 40 s after its time", -40 * time.Second, 0, false},
		{"stored 20 s before its time", 20 * time.Second, 0, true},
		{"stored 40 s before its time", 40 * time.Second, 0, false},
		{"waited 40 s since stored", -40 * time.Second, -40 * time.Second, false},
	} {
		if got := e.UnseenForTest(ctx, at(c.idAt), now.Add(c.store)); got != c.want {
			t.Errorf("%s: unseen %v, want %v", c.name, got, c.want)
		}
	}
	if e.UnseenForTest(ctx, fsm.Command{ID: uuid.NewString(), Type: fsm.Configure, Workspace: "bounds"}, now) {
		t.Error("a random (v4) id is unseen")
	}
	// The command stream's window lowered while the engine runs: nothing
	// is unseen until it is as at open again (copies judged under the
	// longer window may be closer than the shorter one apart).
	setWindow := func(d time.Duration) {
		t.Helper()
		st, err := core.JS.Stream(ctx, core.Store.Names().CommandStream())
		if err != nil {
			t.Fatal(err)
		}
		cfg := st.CachedInfo().Config
		cfg.Duplicates = d
		if _, err := core.JS.UpdateStream(ctx, cfg); err != nil {
			t.Fatal(err)
		}
	}
	fresh := func() bool {
		now := time.Now()
		return e.UnseenForTest(ctx, fsm.Command{ID: v7At(t, now), Type: fsm.Configure, Workspace: "bounds"}, now)
	}
	setWindow(40 * time.Second)
	testenv.Eventually(t, 30*time.Second, "the lowered window to turn unseen off", func() bool { return !fresh() })
	setWindow(2 * time.Minute)
	testenv.Eventually(t, 30*time.Second, "the window as at open to turn it on again", fresh)
}

// A message whose Nats-Msg-Id is a UUIDv7 dated ahead, refused as invalid
// (its body names another id), stores its refusal under an id of its own
// (invalid-<seq>), never under the id dated ahead.
func TestRefusalOfAnAheadDatedIDIsNotStoredUnderIt(t *testing.T) {
	core := testenv.StartCore(t, testenv.CoreOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	id := v7At(t, time.Now().Add(10*time.Minute))
	data, err := events.EncodeCommand(fsm.Command{ID: "other-id", Type: fsm.Configure, Workspace: "ahead", Spec: &fsm.Spec{Env: map[string]string{"A": "1"}}})
	if err != nil {
		t.Fatal(err)
	}
	m := nats.NewMsg(core.Store.Names().Command("ahead"))
	m.Data = data
	m.Header.Set(jetstream.MsgIDHeader, id)
	ack, err := core.JS.PublishMsg(ctx, m)
	if err != nil {
		t.Fatal(err)
	}
	refusal := fmt.Sprintf("%s%d", fsm.RefusalIDPrefix, ack.Sequence)
	testenv.Eventually(t, 20*time.Second, "the refusal under "+refusal, func() bool {
		o, ok, err := core.Store.Outcome(ctx, refusal)
		if err != nil {
			t.Fatal(err)
		}
		return ok && isRejection(o, fsm.CodeInvalid)
	})
	if _, ok, err := core.Store.Outcome(ctx, id); err != nil || ok {
		t.Fatalf("an outcome is stored under the id dated ahead (found %v, %v)", ok, err)
	}
}
