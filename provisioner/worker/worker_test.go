package worker_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/internal/testenv"
	"github.com/turnstile-dev/turnstile/provisioner"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestWorkerLifecycleOnSim(t *testing.T) {
	p := newSim(t, 0, 5*time.Millisecond)
	r := newRig(t, p, rigOptions{})
	r.send(t, fsm.Command{Type: fsm.Create, Workspace: "life"})
	st := r.wait(t, "life", fsm.Running, 1, 10*time.Second)
	inst, err := p.Inspect(context.Background(), "life")
	if err != nil || st.ContainerID == "" || inst.ContainerID != st.ContainerID || !inst.Running {
		t.Fatalf("running state %+v, container %+v, %v", st, inst, err)
	}
	r.send(t, fsm.Command{Type: fsm.Stop, Workspace: "life"})
	r.wait(t, "life", fsm.Stopped, 2, 10*time.Second)
	if inst, err := p.Inspect(context.Background(), "life"); err == nil && inst.Running {
		t.Fatalf("stopped workspace's container runs: %+v", inst)
	}
	r.send(t, fsm.Command{Type: fsm.Start, Workspace: "life"})
	r.wait(t, "life", fsm.Running, 3, 10*time.Second)
	r.send(t, fsm.Command{Type: fsm.Delete, Workspace: "life"})
	r.wait(t, "life", fsm.Deleted, 4, 10*time.Second)
	if list := instances(t, p); len(list) != 0 {
		t.Fatalf("containers left after delete: %+v", list)
	}
	if p.Host().VolumeExists("life") {
		t.Fatal("volume left after delete")
	}
}

// A slow provision of generation 1 is overtaken by a stop (generation 2):
// the provision is cancelled before the stop runs, and no container is left
// running.
func TestSlowProvisionOvertakenByStop(t *testing.T) {
	p := newSim(t, 0, time.Millisecond)
	r := newRig(t, p, rigOptions{})
	r.send(t, fsm.Command{Type: fsm.Create, Workspace: "slow", Spec: &fsm.Spec{Env: map[string]string{"AGENT_START_DELAY": "1h"}}})
	testenv.Eventually(t, 10*time.Second, "the container of generation 1 to exist", func() bool {
		_, err := p.Inspect(context.Background(), "slow")
		return err == nil
	})
	if o := r.send(t, fsm.Command{Type: fsm.Stop, Workspace: "slow"}); o.Outcome != fsm.Accepted || o.Generation != 2 {
		t.Fatalf("stop during provisioning: %+v", o)
	}
	r.wait(t, "slow", fsm.Stopped, 2, 10*time.Second)
	for _, inst := range instances(t, p) {
		if inst.Running {
			t.Fatalf("container left running after stop: %+v", inst)
		}
	}
}

// A worker stopped in the middle of provisioning leaves the event unacked;
// the next worker redoes the action and the workspace runs with exactly one
// container.
func TestWorkerCrashMidProvision(t *testing.T) {
	p := newSim(t, 0, time.Millisecond)
	r := newRig(t, p, rigOptions{})
	// The crash must come before the agent is ready (then the worker
	// reports the provision done): the delay is the time the test has
	// to see the container and close the worker. 300 ms was short for
	// that on a loaded host; each container waits it once.
	r.send(t, fsm.Command{Type: fsm.Create, Workspace: "crash", Spec: &fsm.Spec{Env: map[string]string{"AGENT_START_DELAY": "3s"}}})
	testenv.Eventually(t, 10*time.Second, "provisioning to begin", func() bool {
		_, err := p.Inspect(context.Background(), "crash")
		return err == nil
	})
	if err := r.w.Close(); err != nil { // the crash: the action is abandoned unacked
		t.Fatal(err)
	}
	if h, _ := r.core.Store.Load(context.Background(), "crash"); h.State.Status != fsm.Provisioning {
		t.Fatalf("after the crash: %+v", h.State)
	}
	r.startWorker(t)
	st := r.wait(t, "crash", fsm.Running, 1, 30*time.Second)
	list := instances(t, p)
	if len(list) != 1 || list[0].ContainerID != st.ContainerID {
		t.Fatalf("containers after recovery: %+v (state %+v)", list, st)
	}
}

func TestDeadlineExceeded(t *testing.T) {
	p := newSim(t, 0, time.Millisecond)
	r := newRig(t, p, rigOptions{deadlines: map[fsm.Status]time.Duration{fsm.Provisioning: 300 * time.Millisecond}})
	r.send(t, fsm.Command{Type: fsm.Create, Workspace: "late", Spec: &fsm.Spec{Env: map[string]string{"AGENT_START_DELAY": "1h"}}})
	st := r.wait(t, "late", fsm.Failed, 1, 10*time.Second)
	if !strings.Contains(st.LastError, "provisioning deadline of 300ms exceeded") {
		t.Fatalf("reason: %q", st.LastError)
	}
	// The abandoned attempt's container is stopped by the next command.
	r.send(t, fsm.Command{Type: fsm.Stop, Workspace: "late"})
	r.wait(t, "late", fsm.Stopped, 2, 10*time.Second)
	for _, inst := range instances(t, p) {
		if inst.Running {
			t.Fatalf("container left running: %+v", inst)
		}
	}
}

// A container killed from outside becomes failed with the exit code; a
// restart brings the workspace back.
func TestContainerKilledFromOutside(t *testing.T) {
	p := newSim(t, 0, time.Millisecond)
	r := newRig(t, p, rigOptions{})
	r.send(t, fsm.Command{Type: fsm.Create, Workspace: "killed"})
	r.wait(t, "killed", fsm.Running, 1, 10*time.Second)
	if err := p.Host().Remove("killed"); err != nil { // docker rm -f
		t.Fatal(err)
	}
	st := r.wait(t, "killed", fsm.Failed, 1, 10*time.Second)
	if !strings.HasPrefix(st.LastError, "container exited") {
		t.Fatalf("reason: %q", st.LastError)
	}
	r.send(t, fsm.Command{Type: fsm.Restart, Workspace: "killed"})
	r.wait(t, "killed", fsm.Running, 2, 10*time.Second)
}

// Without a watcher, the reconciler finds a running workspace whose
// container vanished, and removes containers nobody owns any more.
func TestReconciler(t *testing.T) {
	p := newSim(t, 0, time.Millisecond)
	r := newRig(t, p, rigOptions{noWatcher: true})
	r.send(t, fsm.Command{Type: fsm.Create, Workspace: "vanish"})
	r.wait(t, "vanish", fsm.Running, 1, 10*time.Second)
	testenv.Eventually(t, 10*time.Second, "the supervisor to see it running", func() bool {
		s, g := r.sup.State("vanish")
		return s == fsm.Running && g == 1
	})
	if err := p.Host().Remove("vanish"); err != nil {
		t.Fatal(err)
	}
	// An orphan: a container of this installation for a workspace that has
	// no history.
	if _, err := p.Provision(context.Background(), provisioner.Request{Workspace: "orphan", Generation: 3}); err != nil {
		t.Fatal(err)
	}
	r.sup.Reconcile(context.Background())
	st := r.wait(t, "vanish", fsm.Failed, 1, 10*time.Second)
	if !strings.Contains(st.LastError, "is gone") {
		t.Fatalf("reason: %q", st.LastError)
	}
	if _, err := p.Inspect(context.Background(), "orphan"); err == nil {
		t.Fatal("orphan container survived reconciliation")
	}
}

// The reconciler stops a stray container of a stopped workspace, but never a
// container newer than the state it holds: that means its view lags behind
// a start, and stopping it would undo the start.
func TestReconcilerNeverStopsANewerContainer(t *testing.T) {
	p := newSim(t, 0, time.Millisecond)
	r := newRig(t, p, rigOptions{noWatcher: true})
	r.send(t, fsm.Command{Type: fsm.Create, Workspace: "lag"})
	r.wait(t, "lag", fsm.Running, 1, 10*time.Second)
	r.send(t, fsm.Command{Type: fsm.Stop, Workspace: "lag"})
	r.wait(t, "lag", fsm.Stopped, 2, 10*time.Second)
	testenv.Eventually(t, 10*time.Second, "the supervisor to see it stopped", func() bool {
		s, g := r.sup.State("lag")
		return s == fsm.Stopped && g == 2
	})
	// A start the supervisor has not read yet: generation 3 runs.
	if _, err := p.Provision(context.Background(), provisioner.Request{Workspace: "lag", Generation: 3}); err != nil {
		t.Fatal(err)
	}
	r.sup.Reconcile(context.Background())
	inst, err := p.Inspect(context.Background(), "lag")
	if err != nil || !inst.Running || inst.Generation != 3 {
		t.Fatalf("the newer container after reconciling: %+v, %v", inst, err)
	}
}
