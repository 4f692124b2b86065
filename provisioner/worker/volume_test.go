package worker_test

import (
	"context"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/volume"

	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/internal/testenv"
	"github.com/turnstile-dev/turnstile/provisioner"
	"github.com/turnstile-dev/turnstile/provisioner/sim"
)

// The reconciler removes volumes of workspaces that are deleted or never
// existed, and keeps those of live workspaces (even without a container)
// and of other installations.
func TestReconcilerRemovesOrphanVolumesOnSim(t *testing.T) {
	p := newSim(t, 0, time.Millisecond)
	other, err := sim.New(sim.Config{Host: p.Host(), Installation: "other", DefaultImage: "agent", Logger: testenv.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	r := newRig(t, p, rigOptions{noWatcher: true})
	ctx := context.Background()

	// leak leaves ws's volume behind without a container, as a crashed
	// delete or a "docker rm -f" would.
	leak := func(p *sim.Provisioner, ws string, gen uint64) {
		t.Helper()
		if _, err := p.Provision(ctx, provisioner.Request{Workspace: ws, Generation: gen}); err != nil {
			t.Fatal(err)
		}
		if err := p.Host().Remove(ws); err != nil {
			t.Fatal(err)
		}
	}
	// deleted: its history ends in deleted, yet its volume is back.
	r.send(t, fsm.Command{Type: fsm.Create, Workspace: "gone"})
	r.wait(t, "gone", fsm.Running, 1, 10*time.Second)
	r.send(t, fsm.Command{Type: fsm.Delete, Workspace: "gone"})
	r.wait(t, "gone", fsm.Deleted, 2, 10*time.Second)
	leak(p, "gone", 1)
	// never existed.
	leak(p, "never", 1)
	// failed, its container removed from outside: the volume is its data.
	r.send(t, fsm.Command{Type: fsm.Create, Workspace: "kept"})
	r.wait(t, "kept", fsm.Running, 1, 10*time.Second)
	if err := p.Host().Remove("kept"); err != nil {
		t.Fatal(err)
	}
	// stopped: container and volume stay.
	r.send(t, fsm.Command{Type: fsm.Create, Workspace: "idle"})
	r.wait(t, "idle", fsm.Running, 1, 10*time.Second)
	r.send(t, fsm.Command{Type: fsm.Stop, Workspace: "idle"})
	r.wait(t, "idle", fsm.Stopped, 2, 10*time.Second)
	// another installation's leftover.
	leak(other, "theirs", 1)
	testenv.Eventually(t, 10*time.Second, "the supervisor to follow the log", func() bool {
		s, _ := r.sup.State("idle")
		return s == fsm.Stopped
	})

	want := map[string]bool{"gone": true, "never": true, "kept": true, "idle": true}
	if got := volumes(t, p); len(got) != len(want) {
		t.Fatalf("volumes before reconciling: %v, want %v", got, want)
	}
	r.sup.Reconcile(ctx)
	got := volumes(t, p)
	for ws, keep := range map[string]bool{"gone": false, "never": false, "kept": true, "idle": true} {
		if got[ws] != keep {
			t.Errorf("volume of %s: present %v, want %v", ws, got[ws], keep)
		}
	}
	if !volumes(t, other)["theirs"] {
		t.Error("the other installation's volume was removed")
	}
	// The running workspace whose container vanished was reported.
	if st := r.wait(t, "kept", fsm.Failed, 1, 10*time.Second); st.LastError == "" {
		t.Error("no reason for the failure")
	}
	// Reconciling again changes nothing.
	r.sup.Reconcile(ctx)
	if again := volumes(t, p); len(again) != 2 || !again["kept"] || !again["idle"] {
		t.Fatalf("volumes after a second reconcile: %v", again)
	}
}

// The same on Docker: leaked volumes of a deleted and of an unknown
// workspace go; a failed workspace's volume, another installation's and an
// unlabelled one stay.
func TestDockerReconcilerRemovesOrphanVolumes(t *testing.T) {
	t.Parallel()
	d := newDocker(t)
	r := newRig(t, d.prov, rigOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	otherID := randomID("wt")
	d.provisioner(t, otherID) // removes what carries otherID's label at the end

	mkVolume := func(ws string, labels map[string]string) {
		t.Helper()
		if _, err := d.cli.VolumeCreate(ctx, volume.CreateOptions{Name: provisioner.VolumeName(ws), Labels: labels}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = d.cli.VolumeRemove(context.Background(), provisioner.VolumeName(ws), true) })
	}
	ours := func(ws string) map[string]string {
		return map[string]string{provisioner.LabelInstallation: d.installation, provisioner.LabelWorkspace: ws}
	}
	gone, never, kept, theirs, stray := randomID("gone"), randomID("never"), randomID("kept"), randomID("theirs"), randomID("stray")

	r.send(t, fsm.Command{Type: fsm.Create, Workspace: gone})
	r.wait(t, gone, fsm.Running, 1, 60*time.Second)
	r.send(t, fsm.Command{Type: fsm.Delete, Workspace: gone})
	r.wait(t, gone, fsm.Deleted, 2, 60*time.Second)
	mkVolume(gone, ours(gone)) // leaked back after the delete
	mkVolume(never, ours(never))
	mkVolume(theirs, map[string]string{provisioner.LabelInstallation: otherID, provisioner.LabelWorkspace: theirs})
	mkVolume(stray, nil)

	r.send(t, fsm.Command{Type: fsm.Create, Workspace: kept})
	r.wait(t, kept, fsm.Running, 1, 60*time.Second)
	if err := d.cli.ContainerRemove(ctx, provisioner.ContainerName(kept), container.RemoveOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	r.wait(t, kept, fsm.Failed, 1, 30*time.Second)

	if got := volumes(t, d.prov); len(got) != 3 || !got[gone] || !got[never] || !got[kept] {
		t.Fatalf("ListVolumes before reconciling: %v, want %s, %s and %s", got, gone, never, kept)
	}
	r.sup.Reconcile(ctx)
	for ws, keep := range map[string]bool{gone: false, never: false, kept: true, theirs: true, stray: true} {
		if got := d.volumeExists(t, ws); got != keep {
			t.Errorf("volume of %s: present %v, want %v", ws, got, keep)
		}
	}
	// The failed workspace's data is there for its restart.
	r.send(t, fsm.Command{Type: fsm.Restart, Workspace: kept})
	r.wait(t, kept, fsm.Running, 2, 60*time.Second)
}
