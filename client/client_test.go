package client_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/turnstile-dev/turnstile/client"
	"github.com/turnstile-dev/turnstile/engine"
	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/internal/testenv"
)

func commandCount(t *testing.T, core *testenv.Core) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := core.JS.Stream(ctx, events.NewNames("").CommandStream())
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

func sameOutcome(a, b events.OutcomeRecord) bool {
	return a.CommandID == b.CommandID && a.Workspace == b.Workspace && a.CommandType == b.CommandType &&
		a.Outcome == b.Outcome && a.EventSeq == b.EventSeq && a.Generation == b.Generation && a.State == b.State &&
		a.DecidedAt.Equal(b.DecidedAt) && (a.Rejection == nil) == (b.Rejection == nil)
}

func TestSend(t *testing.T) {
	core := testenv.StartCore(t, testenv.CoreOptions{})
	cl := core.Client(t, "alice")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	t.Run("Accepted", func(t *testing.T) {
		o, err := cl.Send(ctx, fsm.Command{Type: fsm.Create, Workspace: "ws-1"})
		if err != nil {
			t.Fatal(err)
		}
		if o.Outcome != fsm.Accepted || o.Workspace != "ws-1" || o.CommandType != fsm.Create || o.Actor != "alice" ||
			o.EventSeq != 1 || o.Generation != 1 || o.State != fsm.Provisioning || fsm.ValidateCommandID(o.CommandID) != nil {
			t.Fatalf("outcome: %+v", o)
		}
	})
	t.Run("RejectedIsAnOutcome", func(t *testing.T) {
		o, err := cl.Send(ctx, fsm.Command{ID: "stop-missing", Type: fsm.Stop, Workspace: "missing"})
		if err != nil {
			t.Fatalf("a refusal is not an error: %v", err)
		}
		if o.CommandID != "stop-missing" || o.Outcome != fsm.Rejected || o.Rejection == nil || o.Rejection.Code != fsm.CodeNotFound {
			t.Fatalf("outcome: %+v", o)
		}
	})
	t.Run("InvalidIsAnError", func(t *testing.T) {
		before := commandCount(t, core)
		_, err := cl.Send(ctx, fsm.Command{Type: fsm.Create, Workspace: "Not.Valid"})
		if fsm.RejectionCode(err) != fsm.CodeInvalid {
			t.Fatalf("Send: %v, want an invalid rejection", err)
		}
		if after := commandCount(t, core); after != before {
			t.Fatalf("an invalid command was published: %d commands, then %d", before, after)
		}
	})
}

// The second Send of a command id is answered from the stored outcome
// without publishing again: with the engine gone, nothing else could answer.
func TestSendSameIDTwice(t *testing.T) {
	core := testenv.StartCore(t, testenv.CoreOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := fsm.Command{ID: "create-twice", Type: fsm.Create, Workspace: "twice"}
	first, err := core.Client(t, "a").Send(ctx, cmd)
	if err != nil || first.Outcome != fsm.Accepted {
		t.Fatalf("first send: %+v, %v", first, err)
	}
	for _, e := range core.Engines {
		if err := e.Close(); err != nil {
			t.Fatal(err)
		}
	}
	second, err := core.Client(t, "b").Send(ctx, cmd)
	if err != nil {
		t.Fatalf("second send: %v", err)
	}
	if !sameOutcome(first, second) {
		t.Fatalf("outcomes differ:\n%+v\n%+v", first, second)
	}
	if n := commandCount(t, core); n != 1 {
		t.Fatalf("%d commands stored for one command id", n)
	}
}

// With no engine, Send gives up with ErrNoOutcome when its context ends;
// the command stays published, and its outcome can be learnt later.
func TestSendNoEngine(t *testing.T) {
	n := testenv.StartNATS(t, testenv.NATSOptions{})
	nc, js := n.Connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	names := events.NewNames("")
	if err := events.EnsureStreams(ctx, js, names, events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	cl, err := client.New(ctx, nc, client.Options{PollInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cl.Close() })
	cmd := fsm.Command{ID: "create-later", Type: fsm.Create, Workspace: "later"}

	short, cancelShort := context.WithTimeout(ctx, 200*time.Millisecond)
	_, err = cl.Send(short, cmd)
	cancelShort()
	if !errors.Is(err, client.ErrNoOutcome) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Send without an engine: %v, want ErrNoOutcome", err)
	}

	store, err := events.OpenStore(ctx, js, names, events.Codec{})
	if err != nil {
		t.Fatal(err)
	}
	e, err := engine.New(engine.Config{Store: store, JetStream: js, Logger: testenv.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Open(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })
	o, err := cl.Outcome(ctx, cmd.ID)
	if err != nil || o.Outcome != fsm.Accepted || o.CommandID != cmd.ID {
		t.Fatalf("outcome once an engine runs: %+v, %v", o, err)
	}
	again, err := cl.Send(ctx, cmd)
	if err != nil || !sameOutcome(o, again) {
		t.Fatalf("resend: %+v, %v; want %+v", again, err, o)
	}
}

func TestOutcome(t *testing.T) {
	core := testenv.StartCore(t, testenv.CoreOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sent, err := core.Client(t, "a").Send(ctx, fsm.Command{ID: "create-o", Type: fsm.Create, Workspace: "o"})
	if err != nil {
		t.Fatal(err)
	}
	other := core.Client(t, "b")

	t.Run("OK", func(t *testing.T) {
		o, err := other.Outcome(ctx, "create-o")
		if err != nil || !sameOutcome(sent, o) {
			t.Fatalf("Outcome: %+v, %v; want %+v", o, err, sent)
		}
	})
	t.Run("ErrNoOutcome", func(t *testing.T) {
		short, cancelShort := context.WithTimeout(ctx, 300*time.Millisecond)
		defer cancelShort()
		if _, err := other.Outcome(short, "never-sent"); !errors.Is(err, client.ErrNoOutcome) {
			t.Fatalf("Outcome of an unknown command: %v, want ErrNoOutcome", err)
		}
	})
	t.Run("InvalidID", func(t *testing.T) {
		// Refused at once, not polled until the context ends.
		start := time.Now()
		_, err := other.Outcome(ctx, "not a command id")
		if fsm.RejectionCode(err) != fsm.CodeInvalid || errors.Is(err, client.ErrNoOutcome) {
			t.Fatalf("Outcome of an invalid id: %v, want an invalid rejection", err)
		}
		if ctx.Err() != nil {
			t.Fatalf("Outcome of an invalid id waited %v for the context", time.Since(start))
		}
	})
}

// A command id names one command forever. Sending a different command under
// a used id (the same Idempotency-Key for another request) is refused with
// *client.IDReusedError carrying the first command's outcome, and records
// nothing for the second command: Send finds the stored outcome before it
// publishes, and an engine that meets the id again anyway (a publisher
// without that check, after the stream's duplicate window: simulated by
// publishing without a message id) records nothing either.
func TestSendReusedID(t *testing.T) {
	core := testenv.StartCore(t, testenv.CoreOptions{})
	cl := core.Client(t, "alice")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	first, err := cl.Send(ctx, fsm.Command{ID: "key-1", Type: fsm.Create, Workspace: "first"})
	if err != nil || first.Outcome != fsm.Accepted {
		t.Fatalf("first send: %+v, %v", first, err)
	}
	store := cl.Store()
	noHistory := func(t *testing.T, id string) {
		t.Helper()
		h, err := store.Load(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if h.State.Status != fsm.None || h.StreamSeq != 0 {
			t.Fatalf("workspace %s has state %+v: the reused id recorded a command", id, h)
		}
	}

	t.Run("RefusedBeforePublishing", func(t *testing.T) {
		before := commandCount(t, core)
		_, err := cl.Send(ctx, fsm.Command{ID: "key-1", Type: fsm.Create, Workspace: "second"})
		if after := commandCount(t, core); after != before {
			t.Fatalf("the reused id was published: %d commands, then %d", before, after)
		}
		var reused *client.IDReusedError
		if !errors.As(err, &reused) {
			t.Fatalf("Send: %v, want *client.IDReusedError", err)
		}
		if reused.Outcome.Workspace != "first" || !sameOutcome(reused.Outcome, first) {
			t.Fatalf("the error carries %+v, want the first command's outcome %+v", reused.Outcome, first)
		}
		noHistory(t, "second")
	})
	t.Run("SameCommandAgain", func(t *testing.T) {
		before := commandCount(t, core)
		o, err := cl.Send(ctx, fsm.Command{ID: "key-1", Type: fsm.Create, Workspace: "first"})
		if err != nil || !sameOutcome(o, first) {
			t.Fatalf("Send of the same command: %+v, %v; want the first outcome", o, err)
		}
		if after := commandCount(t, core); after != before {
			t.Fatalf("a stored command was published again: %d commands, then %d", before, after)
		}
	})
	t.Run("EngineMeetsAReusedID", func(t *testing.T) {
		b, err := events.EncodeCommand(fsm.Command{ID: "key-1", Type: fsm.Create, Workspace: "third", Actor: "alice"})
		if err != nil {
			t.Fatal(err)
		}
		// No Nats-Msg-Id: the stream stores it, as it would once the
		// duplicate window has passed, and the engine handles it.
		if _, err := core.JS.Publish(ctx, events.NewNames("").Command("third"), b); err != nil {
			t.Fatal(err)
		}
		_, err = cl.Send(ctx, fsm.Command{ID: "key-1", Type: fsm.Create, Workspace: "third"})
		var reused *client.IDReusedError
		if !errors.As(err, &reused) || !sameOutcome(reused.Outcome, first) {
			t.Fatalf("Send: %v, want *client.IDReusedError with the first outcome", err)
		}
		// The engine has taken the raw command off the stream once its
		// consumer has nothing pending; only then is "nothing recorded" a
		// finding rather than a race.
		waitDrained(t, ctx, core)
		noHistory(t, "third")
		o, ok, err := store.Outcome(ctx, "key-1")
		if err != nil || !ok || !sameOutcome(o, first) {
			t.Fatalf("stored outcome of key-1: %+v, %v, %v; want the first", o, ok, err)
		}
	})
}

// waitDrained waits until the engine's partition consumers have taken and
// acked every command stored (testenv.Drained).
func waitDrained(t *testing.T, ctx context.Context, core *testenv.Core) {
	t.Helper()
	for {
		if ok, _ := testenv.Drained(ctx, core.JS, events.NewNames("").CommandStream()); ok {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the engine's consumer did not drain: %v", ctx.Err())
		case <-time.After(20 * time.Millisecond): // poll interval
		}
	}
}

// A system client sends reports to <prefix>.sys.<ws> (under a reserved id
// when it makes one up) and user commands to <prefix>.cmd.<ws>; a client
// with a ReplyPrefix the engine allows gets its direct reply there (the
// poll interval here is far longer than the test). Issue 12 items 2-4.
func TestSystemClientAndReplyPrefix(t *testing.T) {
	core := testenv.StartCore(t, testenv.CoreOptions{Engine: engine.Config{
		ReplyPrefixes: append(engine.DefaultReplyPrefixes(), "_TEST_REPLY."),
	}})
	nc, _ := core.NATS.Connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sys, err := client.New(ctx, nc, client.Options{Actor: "provisioner", System: true, ReplyPrefix: "_TEST_REPLY", PollInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer sys.Close()
	// A user command needs an actor of its own: "provisioner" is one of
	// Turnstile's parts, which send reports only (fsm.IsSystemActor).
	if o, err := sys.Send(ctx, fsm.Command{Type: fsm.Create, Workspace: "sys-1", Actor: "tester"}); err != nil || o.Outcome != fsm.Accepted {
		t.Fatalf("create: %+v %v", o, err)
	}
	o, err := sys.Send(ctx, fsm.Command{Type: fsm.ProvisionSucceeded, Workspace: "sys-1", Generation: 1})
	if err != nil || o.Outcome != fsm.Accepted || !fsm.IsSystemID(o.CommandID) {
		t.Fatalf("report: %+v %v", o, err)
	}
	names := events.NewNames("")
	for stream, want := range map[string]uint64{names.CommandStream(): 1, names.SystemStream(): 1} {
		st, err := core.JS.Stream(ctx, stream)
		if err != nil {
			t.Fatal(err)
		}
		if info, err := st.Info(ctx); err != nil || info.State.Msgs != want {
			t.Fatalf("%s holds %+v (%v), want %d message(s)", stream, info.State, err, want)
		}
	}
}
