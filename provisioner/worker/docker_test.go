package worker_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"

	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/internal/agent"
	"github.com/turnstile-dev/turnstile/internal/testenv"
	"github.com/turnstile-dev/turnstile/provisioner"
)

// These tests run the worker, supervisor and watcher against the real
// Docker engine, each on its own installation id (and so its own labels),
// and remove everything labelled with it when they end.

// The seed system's CI lane: create, restart at once, expect running (never
// failed) within 90 s, then delete: container and volume gone.
func TestDockerSeedLane(t *testing.T) {
	t.Parallel()
	d := newDocker(t)
	r := newRig(t, d.prov, rigOptions{})
	ws := randomID("seed")

	if o := r.send(t, fsm.Command{Type: fsm.Create, Workspace: ws}); o.Outcome != fsm.Accepted || o.Generation != 1 {
		t.Fatalf("create: %+v", o)
	}
	restart := r.send(t, fsm.Command{Type: fsm.Restart, Workspace: ws})
	gen := uint64(1)
	switch {
	case restart.Outcome == fsm.Accepted:
		gen = restart.Generation
	case restart.Outcome == fsm.Rejected && restart.Rejection != nil && restart.Rejection.Code == fsm.CodeBusy:
		if restart.Rejection.Generation != 1 || !slices.Contains(restart.Rejection.Allowed, fsm.Stop) {
			t.Errorf("busy rejection %+v: want generation 1 and stop among the allowed commands", restart.Rejection)
		}
	default:
		t.Fatalf("restart at once after create: %+v, want accepted or rejected busy", restart)
	}
	st := r.wait(t, ws, fsm.Running, gen, 90*time.Second)

	c, ok := d.inspect(t, ws)
	if !ok || !c.State.Running || c.ID != st.ContainerID || c.Config.Labels[provisioner.LabelGeneration] != fmt.Sprint(gen) {
		t.Fatalf("running workspace %+v: container %s running %v (want %s of generation %d)", st, c.ID, ok && c.State.Running, st.ContainerID, gen)
	}
	if c.State.Health == nil || c.State.Health.Status != container.Healthy {
		t.Errorf("container health %+v: running must mean healthy", c.State.Health)
	}
	for _, e := range r.history(t, ws) {
		if e.State.Status == fsm.Failed {
			t.Fatalf("the workspace failed on the way: %s %q", e.Type, e.Payload.Reason)
		}
	}

	r.send(t, fsm.Command{Type: fsm.Delete, Workspace: ws})
	r.wait(t, ws, fsm.Deleted, 0, 60*time.Second)
	if _, ok := d.inspect(t, ws); ok {
		t.Error("container left after delete")
	}
	if d.volumeExists(t, ws) {
		t.Error("volume left after delete")
	}
}

// 50 workspaces, each sent create, restart, stop, start and delete without
// waiting for any steady state in between (commands of different
// workspaces race each other; a random pause before each command, of up to
// 0.6 s for the most hurried workspaces and up to 6 s for the most patient,
// lets some land on in-flight states and some on settled ones).
// Then one more delete each: all end deleted with nothing left on the
// engine, no attempt ever lost a fight over a container name, and every
// history replays legally.
func TestDockerFiftyWorkspacesRacing(t *testing.T) {
	t.Parallel()
	d := newDocker(t)
	r := newRig(t, d.prov, rigOptions{})
	const n = 50
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	prefix := randomID("race")
	ids := make([]string, n)
	script := []fsm.CommandType{fsm.Create, fsm.Restart, fsm.Stop, fsm.Start, fsm.Delete}
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		outcomes = map[fsm.CommandType]map[fsm.Outcome]int{}
		errs     []error
	)
	for i := range n {
		ids[i] = fmt.Sprintf("%s-%02d", prefix, i)
		rng := rand.New(rand.NewPCG(seed, uint64(i)))
		pauses := make([]time.Duration, len(script))
		for k := range pauses {
			pauses[k] = time.Duration(rng.Int64N(int64(time.Duration(1+i%10) * 600 * time.Millisecond)))
		}
		wg.Go(func() {
			for k, typ := range script {
				// Spreads the commands out (load shaping, not synchronisation).
				<-time.After(pauses[k])
				o, err := r.trySend(fsm.Command{Type: typ, Workspace: ids[i]})
				mu.Lock()
				if err != nil {
					errs = append(errs, err)
				} else {
					if outcomes[typ] == nil {
						outcomes[typ] = map[fsm.Outcome]int{}
					}
					outcomes[typ][o.Outcome]++
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		t.Error(err)
	}
	t.Logf("outcomes by command: %v", outcomes)
	if outcomes[fsm.Create][fsm.Accepted] != n {
		t.Fatalf("creates accepted: %d of %d", outcomes[fsm.Create][fsm.Accepted], n)
	}

	for _, id := range ids {
		if o := r.send(t, fsm.Command{Type: fsm.Delete, Workspace: id}); o.Outcome == fsm.Rejected {
			t.Errorf("final delete of %s refused: %+v", id, o.Rejection)
		}
	}
	for _, id := range ids {
		r.wait(t, id, fsm.Deleted, 0, 90*time.Second)
	}

	states, failures := r.auditAll(t)
	failed := 0
	for _, id := range ids {
		if states[id].Status != fsm.Deleted {
			t.Errorf("%s replays to %s, want deleted", id, states[id].Status)
		}
		for _, reason := range failures[id] {
			failed++
			if isNameConflict(reason) {
				t.Errorf("%s failed over a container name: %q", id, reason)
			} else {
				t.Logf("%s failed (not over a name): %q", id, reason)
			}
		}
	}
	t.Logf("%d failures in all, none over a name", failed)
	cs, vs := d.leftovers(t, d.installation)
	for _, c := range cs {
		t.Errorf("container left: %v %s (%s)", c.Names, c.ID, c.State)
	}
	for _, v := range vs {
		t.Errorf("volume left: %s", v.Name)
	}
}

// A slow-starting container (AGENT_START_DELAY) is still provisioning when
// a stop (generation 2) arrives: the provision is cancelled, its container
// removed, and the workspace ends stopped with nothing running.
func TestDockerSlowProvisionOvertakenByStop(t *testing.T) {
	t.Parallel()
	d := newDocker(t)
	r := newRig(t, d.prov, rigOptions{})
	ws := randomID("slow")
	r.send(t, fsm.Command{Type: fsm.Create, Workspace: ws, Spec: &fsm.Spec{Env: map[string]string{agent.EnvStartDelay: "30s"}}})
	testenv.Eventually(t, 60*time.Second, "generation 1's container to run (not yet healthy)", func() bool {
		c, ok := d.inspect(t, ws)
		return ok && c.State.Running
	})
	if o := r.send(t, fsm.Command{Type: fsm.Stop, Workspace: ws}); o.Outcome != fsm.Accepted || o.Generation != 2 {
		t.Fatalf("stop during provisioning: %+v, want accepted at generation 2", o)
	}
	r.wait(t, ws, fsm.Stopped, 2, 60*time.Second)
	for _, c := range d.workspaceContainers(t, ws) {
		if c.State == container.StateRunning {
			t.Errorf("container %s (generation %s) still runs after the stop", c.ID, c.Labels[provisioner.LabelGeneration])
		}
	}
	if c, ok := d.inspect(t, ws); ok && c.State.Running {
		t.Errorf("ws-%s still runs after the stop", ws)
	}
	for _, e := range r.history(t, ws) {
		if e.State.Status == fsm.Running || e.State.Status == fsm.Failed {
			t.Errorf("history went through %s: %s", e.State.Status, e.Type)
		}
	}
}

// The worker stops in the middle of a provision (slow image); a new worker
// redoes the action and the workspace runs with exactly one container.
func TestDockerWorkerCrashMidProvision(t *testing.T) {
	t.Parallel()
	d := newDocker(t)
	r := newRig(t, d.prov, rigOptions{})
	ws := randomID("crash")
	r.send(t, fsm.Command{Type: fsm.Create, Workspace: ws, Spec: &fsm.Spec{Env: map[string]string{agent.EnvStartDelay: "4s"}}})
	testenv.Eventually(t, 60*time.Second, "provisioning to have started the container", func() bool {
		c, ok := d.inspect(t, ws)
		return ok && c.State.Running
	})
	if err := r.w.Close(); err != nil {
		t.Fatal(err)
	}
	if h, err := r.core.Store.Load(context.Background(), ws); err != nil || h.State.Status != fsm.Provisioning {
		t.Fatalf("after the worker stopped: %+v, %v; want still provisioning", h.State, err)
	}
	r.startWorker(t)
	st := r.wait(t, ws, fsm.Running, 1, 60*time.Second)
	cs := d.workspaceContainers(t, ws)
	if len(cs) != 1 || cs[0].ID != st.ContainerID || cs[0].State != container.StateRunning {
		t.Fatalf("containers of %s after recovery: %+v; want exactly %s, running", ws, cs, st.ContainerID)
	}
}

// docker rm -f of a running workspace's container: the watcher reports it,
// the workspace fails with "container exited ...", the volume stays, and a
// restart brings the workspace back.
func TestDockerContainerRemovedFromOutside(t *testing.T) {
	t.Parallel()
	d := newDocker(t)
	r := newRig(t, d.prov, rigOptions{})
	ws := randomID("rmf")
	r.send(t, fsm.Command{Type: fsm.Create, Workspace: ws})
	first := r.wait(t, ws, fsm.Running, 1, 60*time.Second)
	if err := d.cli.ContainerRemove(context.Background(), provisioner.ContainerName(ws), container.RemoveOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	st := r.wait(t, ws, fsm.Failed, 1, 30*time.Second)
	if !strings.HasPrefix(st.LastError, "container exited") {
		t.Fatalf("failure reason %q, want it to start with \"container exited\"", st.LastError)
	}
	if !d.volumeExists(t, ws) {
		t.Fatal("docker rm -f took the volume")
	}
	if o := r.send(t, fsm.Command{Type: fsm.Restart, Workspace: ws}); o.Outcome != fsm.Accepted || o.Generation != 2 {
		t.Fatalf("restart of the failed workspace: %+v", o)
	}
	back := r.wait(t, ws, fsm.Running, 2, 60*time.Second)
	c, ok := d.inspect(t, ws)
	if !ok || !c.State.Running || c.ID != back.ContainerID || c.ID == first.ContainerID || c.Config.Labels[provisioner.LabelGeneration] != "2" {
		t.Fatalf("after the restart: state %+v, container %s running %v", back, c.ID, ok && c.State.Running)
	}
}

// Another installation's container named ws-<id> on the same engine: our
// worker's provisions of that id fail with name_taken, and nothing our
// worker, watcher or reconciler does in a whole lifecycle of the id
// (create, restart, stop, start, delete, reconcile) touches it.
func TestDockerOtherInstallationNeverTouched(t *testing.T) {
	t.Parallel()
	d := newDocker(t)
	r := newRig(t, d.prov, rigOptions{})
	otherID := randomID("wt")
	other := d.provisioner(t, otherID)
	ws := randomID("twin")
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	theirs, err := other.Provision(ctx, provisioner.Request{Workspace: ws, Generation: 5})
	if err != nil {
		t.Fatal(err)
	}
	before, err := d.cli.ContainerInspect(ctx, theirs.ContainerID)
	if err != nil {
		t.Fatal(err)
	}
	r.sup.Reconcile(ctx)

	wantTaken := func(gen uint64) {
		t.Helper()
		st := r.wait(t, ws, fsm.Failed, gen, 60*time.Second)
		want := fmt.Sprintf("container name %s is taken by installation %s", provisioner.ContainerName(ws), otherID)
		if !strings.Contains(st.LastError, want) {
			t.Fatalf("failure reason %q, want %q", st.LastError, want)
		}
	}
	r.send(t, fsm.Command{Type: fsm.Create, Workspace: ws})
	wantTaken(1)
	r.send(t, fsm.Command{Type: fsm.Restart, Workspace: ws})
	wantTaken(2)
	r.send(t, fsm.Command{Type: fsm.Stop, Workspace: ws})
	r.wait(t, ws, fsm.Stopped, 3, 60*time.Second)
	r.send(t, fsm.Command{Type: fsm.Start, Workspace: ws})
	wantTaken(4)
	r.send(t, fsm.Command{Type: fsm.Delete, Workspace: ws})
	r.wait(t, ws, fsm.Deleted, 5, 60*time.Second)
	r.sup.Reconcile(ctx)

	after, err := d.cli.ContainerInspect(ctx, theirs.ContainerID)
	if err != nil {
		t.Fatalf("the other installation's container is gone: %v", err)
	}
	if !after.State.Running || after.State.StartedAt != before.State.StartedAt || after.RestartCount != before.RestartCount ||
		after.Config.Labels[provisioner.LabelInstallation] != otherID || after.Config.Labels[provisioner.LabelGeneration] != "5" {
		t.Fatalf("the other installation's container was touched: running %v, started %s (was %s), labels %v",
			after.State.Running, after.State.StartedAt, before.State.StartedAt, after.Config.Labels)
	}
	if !d.volumeExists(t, ws) {
		t.Fatal("the other installation's volume is gone")
	}
	if in, err := other.Inspect(ctx, ws); err != nil || !in.Running || in.Generation != 5 {
		t.Fatalf("the other installation sees %+v, %v; want its generation 5 running", in, err)
	}
	cs, vs := d.leftovers(t, d.installation)
	if len(cs) != 0 || len(vs) != 0 {
		t.Fatalf("our installation left %d containers and %d volumes", len(cs), len(vs))
	}
}
