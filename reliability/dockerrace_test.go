package reliability_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/turnstile-dev/turnstile/fsm"
)

// TestDockerSeedRace is the seed's race at scale on real Docker.
//
// CreateRestart: for every workspace a create and a restart are sent at
// the same moment from two clients (as engine's TestSeedRaceAtScale does
// with the simulator). In the seed system both reached the container
// start, the second hit Docker's name conflict and the workspace was
// wedged in failed. Here each restart is accepted or refused (busy while
// provisioning, not_found when it overtakes the create).
//
// RestartConfigure: then every workspace is restarted and configured at
// the same moment, again from two clients, so that Docker replaces every
// container (once or twice: a configure during provisioning brings one
// follow-up attempt) at scale.
//
// After each round: no workspace failed, every one runs its current
// generation's container, no event or outcome speaks of a name conflict,
// and no container or volume of the installation belongs to anything but a
// live workspace. At the end, after deleting all, nothing of the
// installation is left, and the package's checks pass.
func TestDockerSeedRace(t *testing.T) {
	gate(t)
	n := pick(32, 200)
	// All n provisions start at once and Docker does them side by side: on
	// 2 cores 200 take minutes, so the deadlines are far beyond that.
	deadline := pick(5*time.Minute, 20*time.Minute)
	begin := time.Now()
	d := newDockerEnv(t)
	img := d.imageWithoutHealthCheck(t)
	s, rec, natsURL, dbURL := dockerServe(t, d, deadline, "TURNSTILE_DEFAULT_IMAGE="+img)
	other := rec.via(newClient(t, connect(t, natsURL, "reliability-docker-b")))
	store := rec.cl.Store()
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("race-%s-%03d", d.suffix, i)
	}
	t.Logf("%d workspaces on installation %s, deadlines %v", n, d.installation, deadline)

	// pairs sends first(id) and second(id) at once, from the two clients,
	// for every workspace, and counts the outcomes of each ("accepted",
	// "rejected busy", ...).
	pairs := func(t *testing.T, first, second func(id string) fsm.Command) (firsts, seconds map[string]int) {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		var mu sync.Mutex
		firsts, seconds = map[string]int{}, map[string]int{}
		send := func(r *cmdRecorder, cmd fsm.Command, counts map[string]int) {
			o, err := r.send(ctx, cmd)
			if err != nil {
				t.Error(err)
				return
			}
			k := string(o.Outcome)
			if o.Rejection != nil {
				k += " " + string(o.Rejection.Code)
			}
			mu.Lock()
			counts[k]++
			mu.Unlock()
		}
		var wg sync.WaitGroup
		sem := make(chan struct{}, 64) // load shaping: at most 64 pairs in flight
		for _, id := range ids {
			sem <- struct{}{}
			var pair sync.WaitGroup
			pair.Go(func() { send(rec, first(id), firsts) })
			pair.Go(func() { send(other, second(id), seconds) })
			wg.Go(func() { pair.Wait(); <-sem })
		}
		wg.Wait()
		return firsts, seconds
	}
	only := func(t *testing.T, what string, counts map[string]int, allowed ...string) {
		t.Helper()
		for k := range counts {
			if !slices.Contains(allowed, k) {
				t.Errorf("%s: %d outcomes %q, want only %v", what, counts[k], k, allowed)
			}
		}
	}
	// settleAll waits for every workspace to settle and checks the round.
	settleAll := func(t *testing.T, start time.Time) {
		t.Helper()
		failed := 0
		for _, id := range ids {
			st := settleWorkspace(t, store, id, deadline+time.Minute)
			if st.Status != fsm.Running {
				failed++
				t.Errorf("%s %s at generation %d (%q)", id, st.Status, st.Generation, st.LastError)
			}
		}
		t.Logf("%d workspaces settled %v after the round began; %d not running", n, time.Since(start).Round(time.Millisecond), failed)
		d.checkRunning(t, store, ids)
		d.checkInventory(t, store)
		if c := conflicts(t, store); len(c) > 0 {
			t.Errorf("%d events or outcomes mention a name conflict, the first: %s", len(c), c[0])
		}
	}

	t.Run("CreateRestart", func(t *testing.T) {
		start := time.Now()
		creates, restarts := pairs(t, func(id string) fsm.Command { return fsm.Command{Type: fsm.Create, Workspace: id} },
			func(id string) fsm.Command { return fsm.Command{Type: fsm.Restart, Workspace: id} })
		t.Logf("creates %v, restarts %v, sent in %v", creates, restarts, time.Since(start).Round(time.Millisecond))
		only(t, "create", creates, "accepted")
		only(t, "restart", restarts, "accepted", "rejected busy", "rejected not_found")
		settleAll(t, start)
	})
	if t.Failed() {
		t.FailNow()
	}
	t.Run("RestartConfigure", func(t *testing.T) {
		start := time.Now()
		spec := &fsm.Spec{Env: map[string]string{"ROUND": "2"}}
		restarts, configures := pairs(t, func(id string) fsm.Command { return fsm.Command{Type: fsm.Restart, Workspace: id} },
			func(id string) fsm.Command { return fsm.Command{Type: fsm.Configure, Workspace: id, Spec: spec} })
		t.Logf("restarts %v, configures %v, sent in %v", restarts, configures, time.Since(start).Round(time.Millisecond))
		only(t, "restart", restarts, "accepted", "rejected busy")
		only(t, "configure", configures, "accepted") // legal in every live state
		settleAll(t, start)
		for _, id := range ids {
			if st := settleWorkspace(t, store, id, time.Minute); st.Status == fsm.Running && (st.AttemptSpecVersion != st.SpecVersion || st.Spec.Env["ROUND"] != "2") {
				t.Errorf("%s runs spec version %d of %d (%v)", id, st.AttemptSpecVersion, st.SpecVersion, st.Spec)
			}
		}
	})

	// Whatever the second round left, delete must clean up after it.
	start := time.Now()
	f := deleteAllAndCheck(t, d, rec, natsURL, dbURL, s.dataDir(), ids)
	t.Logf("delete and checks: %v", time.Since(start).Round(time.Millisecond))
	var lookedAgain, createTimeouts int
	for line := range strings.Lines(s.out.String()) {
		switch {
		case strings.Contains(line, "container name taken while creating"):
			lookedAgain++
		case strings.Contains(line, "create container") && strings.Contains(line, "context deadline exceeded"):
			createTimeouts++
		}
	}
	t.Logf("serve logged %d name conflicts on create (looked again) and %d creates that outlasted their timeout", lookedAgain, createTimeouts)
	report{Scenario: "docker-seed-race", Long: long(), Commands: len(rec.commands()), Workspaces: n,
		Seconds: time.Since(begin).Seconds(), FaultKind: "create + restart, then restart + configure, of every workspace at once from two clients",
		StreamRecords: f.Records, Events: f.Events, Outcomes: f.Outcomes, Lost: f.Lost, Duplicated: f.Duplicated}.log(t)
}
