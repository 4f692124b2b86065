package engine_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/turnstile-dev/turnstile/engine"
	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/internal/testenv"
)

// TestOutcomesAloneSkipTheAtomicBatch: commands that append no event
// (here rejections) are committed together, yet write no atomic batch: an
// outcome alone is one message, and an atomic batch costs the server a
// staging store of its own (about 2.5 ms, docs/benchmarks.md). Each outcome
// is still stored once. Issue 16 item 2.
func TestOutcomesAloneSkipTheAtomicBatch(t *testing.T) {
	metrics := engine.NewMetrics(prometheus.NewRegistry())
	core := testenv.StartCore(t, testenv.CoreOptions{Engine: engine.Config{Metrics: metrics}})
	cl := core.Client(t, "t")
	const n = 64
	for i := range n {
		send(t, cl, fsm.Command{Type: fsm.Create, Workspace: fmt.Sprintf("lat-%d", i)})
	}
	commits0 := histCount(metrics.CommitSeconds)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// Rounds of n concurrent rejections until the committer has taken more
	// than one of them at once (batch sizes sum to more than their count).
	batched := func() bool { c, s := histCountSum(metrics.Batches); return s > float64(c) }
	for round := 0; round < 20 && !batched(); round++ {
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				cmd := fsm.Command{Type: fsm.Create, Workspace: fmt.Sprintf("lat-%d", i)}
				o, err := cl.Send(ctx, cmd)
				if err != nil || o.Outcome != fsm.Rejected {
					t.Errorf("create again %d: %+v %v", i, o, err)
				}
				if stored, ok, err := core.Store.Outcome(ctx, o.CommandID); err != nil || !ok || stored.Outcome != fsm.Rejected {
					t.Errorf("stored outcome of %s: %+v %v %v", o.CommandID, stored, ok, err)
				}
			})
		}
		wg.Wait()
	}
	if !batched() {
		t.Fatal("no two commands were ever committed together: the test proves nothing")
	}
	if got := histCount(metrics.CommitSeconds) - commits0; got != 0 {
		t.Errorf("%d atomic batches written for outcomes alone; want none", got)
	}
}

// TestOnlyCommandsStoredBeforeTheTakeAreHandledAsAgain: a command stored
// before the engine took its partition may have been handled by an engine
// before, so its event goes with its outcome in one atomic batch; one
// stored after is new, and takes the plain publishes at once (no atomic
// batch's staging store for every command in the first seconds after a
// start, as when "before" was a time plus a clock allowance).
func TestOnlyCommandsStoredBeforeTheTakeAreHandledAsAgain(t *testing.T) {
	core := testenv.StartCore(t, testenv.CoreOptions{})
	cl := core.Client(t, "t")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	stream, err := core.JS.Stream(ctx, core.Store.Names().EventStream())
	if err != nil {
		t.Fatal(err)
	}
	atomic := func(ws string) bool {
		t.Helper()
		m, err := stream.GetLastMsgForSubject(ctx, core.Store.Names().Event(ws))
		if err != nil {
			t.Fatal(err)
		}
		return m.Header.Get("Nats-Batch-Id") != ""
	}
	send(t, cl, fsm.Command{Type: fsm.Create, Workspace: "after"})
	if atomic("after") {
		t.Error("a command stored after the take was written as an atomic batch (handled as seen before)")
	}

	if err := core.Engines[0].Close(); err != nil {
		t.Fatal(err)
	}
	before, err := cl.Publish(ctx, fsm.Command{Type: fsm.Create, Workspace: "before"})
	if err != nil {
		t.Fatal(err)
	}
	core.StartEngine(t)
	testenv.Eventually(t, 30*time.Second, "the outcome of the command stored before the take", func() bool {
		_, ok, err := core.Store.Outcome(ctx, before.ID)
		return err == nil && ok
	})
	if !atomic("before") {
		t.Error("a command stored before the take was written with plain publishes; want one atomic batch")
	}
}
