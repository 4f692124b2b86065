package engine_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

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
	names := events.NewNames("")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	tnc, tjs := core.NATS.Connect(t)
	const ws = "gap-1"
	thief := partConsumer(t, tjs, ws)
	cmdStream, err := tjs.Stream(ctx, names.CommandStream())
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

	// One workspace's commands, one at a time, until the thief has one: the
	// engine is pinned, so the thief's pull gets a command only when the
	// pin is dropped before one arrives and the thief's pull takes it.
	cl := core.Client(t, "t")
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
	var order []string
	err = core.Store.Replay(ctx, 1, 0, func(r events.Record) error {
		if r.Outcome != nil {
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
	if n := testutil.ToFloat64(metrics.CatchUps); n != 1 {
		t.Errorf("%v catch-ups, want 1", n)
	}
	if n := testutil.ToFloat64(metrics.CaughtUp); n != 1 {
		t.Errorf("%v commands caught up, want 1", n)
	}
}
