package engine_test

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/turnstile-dev/turnstile/client"
	"github.com/turnstile-dev/turnstile/engine"
	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/internal/testenv"
)

// A pull response lost on the way (its node died) leaves its commands
// delivered and unacked until the ack wait. Here a second connection takes
// one command from the engine's durable and goes away without acking it,
// exactly like a lost response; the engine sees the gap in its deliveries
// at the next command and handles the lost one first, without waiting the
// ack wait (a minute here, longer than the test's deadline).
func TestLostDeliveryIsNotOvertaken(t *testing.T) {
	metrics := engine.NewMetrics(prometheus.NewRegistry())
	core := testenv.StartCore(t, testenv.CoreOptions{Engine: engine.Config{AckWait: time.Minute, Metrics: metrics,
		PinnedTTL: time.Second}})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	const ws = "gap-1"
	cl := core.Client(t, "t")
	lost, sent := stealOne(t, ctx, core, cl, ws)
	next, err := cl.Publish(ctx, fsm.Command{Type: fsm.Create, Workspace: ws})
	if err != nil {
		t.Fatal(err)
	}
	sent = append(sent, next.ID)
	testenv.Eventually(t, 20*time.Second, "the lost command and the next decided", func() bool {
		_, ok1, err1 := core.Store.Outcome(ctx, lost)
		_, ok2, err2 := core.Store.Outcome(ctx, next.ID)
		return err1 == nil && err2 == nil && ok1 && ok2
	})

	// Decided in the order they reached the stream.
	decidedInOrder(t, ctx, core, sent, lost)
	if n := testutil.ToFloat64(metrics.CatchUps); n != 1 {
		t.Errorf("%v catch-ups, want 1", n)
	}
	if n := testutil.ToFloat64(metrics.CaughtUp); n != 1 {
		t.Errorf("%v commands caught up, want 1", n)
	}
}

// A catch-up behind a lagging ack floor (one command held up while
// thousands after it were acked) reads a range of many pages, though
// reading it takes many times readAttempt: readAttempt bounds each request
// of the read, not the read, and a failed attempt goes on from the last
// page read. The lost command is then decided before the next, long before
// its ack wait.
//
// On the old code, which bounded each attempt of the read as a whole, every
// attempt ran out of time and the next began again from the ack floor: the
// catch-up never ended, and the partition's pulls waited on it.
func TestCatchUpOfALongRange(t *testing.T) {
	const acked = 3000
	log := newLogged(testenv.Logger(t).Handler())
	cfg := engine.Config{AckWait: time.Minute, PinnedTTL: time.Second, Logger: slog.New(log)}
	// Far less than the read of the whole range takes, far more than one
	// request does.
	cfg = engine.WithReadAttempt(cfg, 200*time.Millisecond)
	core := testenv.StartCore(t, testenv.CoreOptions{Engine: cfg, Partitions: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	floor := heldRange(t, ctx, core, log, acked)

	const ws = "gap-long"
	cl := core.Client(t, "t")
	lost, sent := stealOne(t, ctx, core, cl, ws)
	next, err := cl.Publish(ctx, fsm.Command{Type: fsm.Create, Workspace: ws})
	if err != nil {
		t.Fatal(err)
	}
	sent = append(sent, next.ID)
	// Well inside the ack wait: the catch-up decides the lost command, not
	// its redelivery.
	testenv.Eventually(t, 30*time.Second, "the lost command and the next decided", func() bool {
		_, ok1, err1 := core.Store.Outcome(ctx, lost)
		_, ok2, err2 := core.Store.Outcome(ctx, next.ID)
		return err1 == nil && err2 == nil && ok1 && ok2
	})
	decidedInOrder(t, ctx, core, sent, lost)

	var read []loggedRecord
	for _, r := range log.find("engine: delivery gap: read the commands taken and not finished") {
		if fmt.Sprint(r.attrs["from"]) == fmt.Sprint(floor+1) {
			read = append(read, r)
		}
	}
	if len(read) == 0 {
		t.Fatal("no catch-up read from the ack floor")
	}
	for _, r := range read {
		t.Logf("read from %v to %v: %v commands, %v unfinished, took %v", r.attrs["from"], r.attrs["to"],
			r.attrs["commands"], r.attrs["unfinished"], r.attrs["took"])
		if n := r.attrs["commands"].Int64(); n < acked {
			t.Errorf("the catch-up read %d commands, want the %d after the held one", n, acked)
		}
		if n := r.attrs["unfinished"].Int64(); n > 1 {
			t.Errorf("the catch-up read %d commands as unfinished; only the lost one is", n)
		}
	}
}

// stealOne makes the delivery of one of ws's commands lost on the way: a
// second connection takes it from the engine's durable and goes away
// without acking it, exactly like a lost pull response. It sends ws's
// commands one at a time until one is taken, and returns that one's id and
// the ids sent, in order. The engine is pinned, so the thief's pull gets a
// command only when the pin is dropped before one arrives.
func stealOne(t *testing.T, ctx context.Context, core *testenv.Core, cl *client.Client, ws string) (string, []string) {
	t.Helper()
	tnc, tjs := core.NATS.Connect(t)
	thief := partConsumer(t, tjs, ws)
	cmdStream, err := tjs.Stream(ctx, events.NewNames("").CommandStream())
	if err != nil {
		t.Fatal(err)
	}
	batch, err := thief.Fetch(1, jetstream.FetchMaxWait(time.Minute), jetstream.FetchPriorityGroup(engine.PriorityGroup))
	if err != nil {
		t.Fatal(err)
	}
	stolen := make(chan string, 1)
	go func() {
		for m := range batch.Messages() {
			stolen <- m.Headers().Get(jetstream.MsgIDHeader)
		}
	}()
	testenv.Eventually(t, 10*time.Second, "the thief's pull beside the engine's", func() bool {
		info, err := thief.Info(ctx)
		return err == nil && info.NumWaiting >= 2
	})
	var sent []string
	lost := ""
	for lost == "" {
		if len(sent) == 20 {
			t.Fatal("the thief got none of 20 commands")
		}
		if err := cmdStream.UnpinConsumer(ctx, thief.CachedInfo().Name, engine.PriorityGroup); err != nil {
			t.Fatal(err)
		}
		cmd, err := cl.Publish(ctx, fsm.Command{Type: fsm.Create, Workspace: ws})
		if err != nil {
			t.Fatal(err)
		}
		sent = append(sent, cmd.ID)
		testenv.Eventually(t, 10*time.Second, "command "+cmd.ID+" decided or stolen", func() bool {
			select {
			case lost = <-stolen:
				return true
			default:
			}
			_, ok, err := core.Store.Outcome(ctx, cmd.ID)
			return err == nil && ok
		})
	}
	tnc.Close() // the lost response: delivered, never acked; the pin comes back to the engine after PinnedTTL
	return lost, sent
}

// decidedInOrder fails t unless the commands sent have their outcomes in
// the store in the order sent (other commands' outcomes left out).
func decidedInOrder(t *testing.T, ctx context.Context, core *testenv.Core, sent []string, lost string) {
	t.Helper()
	var order []string
	err := core.Store.Replay(ctx, 1, 0, func(r events.Record) error {
		if r.Outcome != nil && slices.Contains(sent, r.Outcome.CommandID) {
			order = append(order, r.Outcome.CommandID)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(order) != len(sent) {
		t.Fatalf("%d outcomes for %d commands: %v, sent %v", len(order), len(sent), order, sent)
	}
	for i := range sent {
		if order[i] != sent[i] {
			t.Fatalf("decided in order %v, sent in order %v (lost: %s)", order, sent, lost)
		}
	}
}
