package engine_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/turnstile-dev/turnstile/client"
	"github.com/turnstile-dev/turnstile/engine"
	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/internal/testenv"
)

// The seed's race at scale: every workspace is created and at once restarted
// from another client, while a provisioner answers. In the seed system this
// wedged workspaces in failed; here a restart is accepted, refused busy, or
// refused not_found when it overtakes the create, and nothing ends failed.
func TestSeedRaceAtScale(t *testing.T) {
	const n = 500
	metrics := engine.NewMetrics(prometheus.NewRegistry())
	core := testenv.StartCore(t, testenv.CoreOptions{Engine: engine.Config{Metrics: metrics}})
	prov := startProvisioner(t, core, nil)
	a, b := core.Client(t, "client-a"), core.Client(t, "client-b")

	type result struct {
		ws              string
		create, restart events.OutcomeRecord
	}
	results := make([]result, n)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 128)
	for i := range n {
		ws := fmt.Sprintf("seed-%d", i)
		results[i].ws = ws
		sem <- struct{}{}
		wg.Add(2)
		go func() {
			defer wg.Done()
			o, err := a.Send(ctx, fsm.Command{Type: fsm.Create, Workspace: ws})
			if err != nil {
				t.Errorf("create %s: %v", ws, err)
			}
			results[i].create = o
		}()
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			o, err := b.Send(ctx, fsm.Command{Type: fsm.Restart, Workspace: ws})
			if err != nil {
				t.Errorf("restart %s: %v", ws, err)
			}
			results[i].restart = o
		}()
	}
	wg.Wait()
	counts := map[string]int{}
	for _, r := range results {
		if r.create.Outcome != fsm.Accepted {
			t.Errorf("%s: create %+v", r.ws, r.create)
		}
		switch {
		case r.restart.Outcome == fsm.Accepted:
			counts["accepted"]++
		case isRejection(r.restart, fsm.CodeBusy):
			counts["busy"]++
		case isRejection(r.restart, fsm.CodeNotFound):
			counts["not_found"]++
		default:
			t.Errorf("%s: restart outcome %+v", r.ws, r.restart)
		}
	}
	t.Logf("restart outcomes: %v; commands per commit: %.1f (%d commits, %v atomic batches refused)", counts,
		histMean(metrics.Batches), histCount(metrics.Batches), testutil.ToFloat64(metrics.BatchFallbacks))

	for _, r := range results {
		waitState(t, core, r.ws, fsm.Running, 0)
	}
	quiesce(t, core, prov)
	states, outcomes := checkLog(t, core)
	for id, st := range states {
		if st.Status != fsm.Running {
			t.Errorf("%s ended %s (%s)", id, st.Status, st.LastError)
		}
	}
	if want := 2 * n; len(outcomes) < want {
		t.Errorf("%d outcomes for at least %d commands", len(outcomes), want)
	}
}

// A late failure of generation 1, arriving after a restart began generation
// 2, is stale and changes nothing.
func TestStaleFailureNeverMarksFailed(t *testing.T) {
	core := testenv.StartCore(t, testenv.CoreOptions{})
	cl := core.SystemClient(t, "t")
	ws := "stale-1"
	send(t, cl, fsm.Command{Type: fsm.Create, Workspace: ws})
	if o := send(t, cl, fsm.Command{Type: fsm.ProvisionSucceeded, Workspace: ws, Generation: 1}); o.Outcome != fsm.Accepted {
		t.Fatalf("provision_succeeded: %+v", o)
	}
	if o := send(t, cl, fsm.Command{Type: fsm.Restart, Workspace: ws}); o.Outcome != fsm.Accepted || o.Generation != 2 {
		t.Fatalf("restart: %+v", o)
	}
	o := send(t, cl, fsm.Command{Type: fsm.ProvisionFailed, Workspace: ws, Generation: 1, Reason: "late failure of the first attempt"})
	if o.Outcome != fsm.Stale || o.Generation != 2 || o.State != fsm.Provisioning {
		t.Fatalf("late provision_failed: %+v", o)
	}
	h, err := core.Store.Load(context.Background(), ws)
	if err != nil {
		t.Fatal(err)
	}
	if h.State.Status != fsm.Provisioning || h.State.Generation != 2 || h.State.Seq != 3 {
		t.Fatalf("state after stale failure: %+v", h.State)
	}
	checkLog(t, core)
}

// writeModes are the two ways the engine writes events and outcomes
// (Config.AtomicBatchFrom): plain publishes only, and atomic batches from
// two events on (the default).
var writeModes = []struct {
	name       string
	atomicFrom int
}{{"Plain", -1}, {"Atomic", 0}}

// The same command delivered twice yields one event and the same outcome.
func TestSameCommandTwice(t *testing.T) {
	for _, m := range writeModes {
		t.Run(m.name, func(t *testing.T) { testSameCommandTwice(t, m.atomicFrom) })
	}
}

func testSameCommandTwice(t *testing.T, atomicFrom int) {
	core := testenv.StartCore(t, testenv.CoreOptions{Engine: engine.Config{AtomicBatchFrom: atomicFrom}})
	cl := core.Client(t, "t")
	cmd := fsm.Command{ID: "create-dup-1", Type: fsm.Create, Workspace: "dup-1"}
	first := send(t, cl, cmd)
	second := send(t, cl, cmd)
	if first.Outcome != fsm.Accepted || first.EventSeq != second.EventSeq || first.Outcome != second.Outcome || first.Generation != second.Generation {
		t.Fatalf("outcomes differ: %+v vs %+v", first, second)
	}

	// Beyond the stream's dedupe: publish the same command as a new message
	// without a message id, so the engine really handles it twice.
	b, err := events.EncodeCommand(fsm.Command{ID: "restart-dup-1", Type: fsm.Stop, Workspace: "dup-1"})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := core.JS.Publish(context.Background(), "turnstile.cmd.dup-1", b); err != nil {
			t.Fatal(err)
		}
	}
	testenv.Eventually(t, 10*time.Second, "both deliveries handled", func() bool { return consumerDone(core) })
	o, err := cl.Outcome(context.Background(), "restart-dup-1")
	if err != nil || o.Outcome != fsm.Accepted {
		t.Fatalf("outcome of the twice-delivered stop: %+v, %v", o, err)
	}
	states, _ := checkLog(t, core) // fails on a second event or outcome
	if st := states["dup-1"]; st.Seq != 2 || st.Status != fsm.Stopping {
		t.Fatalf("state: %+v", st)
	}
}

func consumerDone(core *testenv.Core) bool {
	// The engine consumes user commands and system reports, a consumer per
	// partition on each.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, stream := range []string{"TURNSTILE_COMMANDS", "TURNSTILE_SYSTEM"} {
		if ok, err := testenv.Drained(ctx, core.JS, stream); !ok || err != nil {
			return false
		}
	}
	return true
}

// Two engines sharing the work, hammered with random commands on the same
// 50 workspaces: per-workspace CAS keeps every history legal and nothing is
// lost or duplicated.
func TestTwoEnginesSameWorkspaces(t *testing.T) {
	for _, m := range writeModes {
		t.Run(m.name, func(t *testing.T) { testTwoEnginesSameWorkspaces(t, m.atomicFrom) })
	}
}

func testTwoEnginesSameWorkspaces(t *testing.T, atomicFrom int) {
	core := testenv.StartCore(t, testenv.CoreOptions{Engines: 2, Engine: engine.Config{AtomicBatchFrom: atomicFrom}})
	prov := startProvisioner(t, core, func(w fsm.Workspace) bool { return w.Generation%5 == 0 })
	clients := []*client.Client{}
	for i := range 4 {
		clients = append(clients, core.Client(t, fmt.Sprintf("c%d", i)))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const perClient = 400
	var wg sync.WaitGroup
	var mu sync.Mutex
	sent := map[string]bool{}
	for ci, c := range clients {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(ci), 7))
			user := fsm.UserCommands()
			inner := sync.WaitGroup{}
			sem := make(chan struct{}, 32)
			for range perClient {
				cmd := fsm.Command{Type: user[rng.IntN(len(user))], Workspace: fmt.Sprintf("hammer-%d", rng.IntN(50))}
				if cmd.Type == fsm.Configure {
					cmd.Spec = &fsm.Spec{Env: map[string]string{"N": fmt.Sprint(rng.IntN(3))}}
				}
				sem <- struct{}{}
				inner.Go(func() {
					defer func() { <-sem }()
					o, err := c.Send(ctx, cmd)
					if err != nil {
						t.Errorf("send: %v", err)
						return
					}
					mu.Lock()
					sent[o.CommandID] = true
					mu.Unlock()
				})
			}
			inner.Wait()
		})
	}
	wg.Wait()
	quiesce(t, core, prov)
	_, outcomes := checkLog(t, core)
	for id := range sent {
		if _, ok := outcomes[id]; !ok {
			t.Errorf("command %s has no stored outcome", id)
		}
	}
	if len(sent) != len(clients)*perClient {
		t.Errorf("%d of %d commands got outcomes", len(sent), len(clients)*perClient)
	}
}

func histMean(h prometheus.Histogram) float64 {
	var m dto.Metric
	if err := h.Write(&m); err != nil || m.Histogram.GetSampleCount() == 0 {
		return 0
	}
	return m.Histogram.GetSampleSum() / float64(m.Histogram.GetSampleCount())
}

func histCount(h prometheus.Histogram) uint64 {
	n, _ := histCountSum(h)
	return n
}

// histCountSum is h's count and sum of observations.
func histCountSum(h prometheus.Histogram) (uint64, float64) {
	var m dto.Metric
	if err := h.Write(&m); err != nil {
		return 0, 0
	}
	return m.Histogram.GetSampleCount(), m.Histogram.GetSampleSum()
}
