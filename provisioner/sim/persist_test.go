package sim_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/provisioner"
	"github.com/turnstile-dev/turnstile/provisioner/provisionertest"
	"github.com/turnstile-dev/turnstile/provisioner/sim"
)

// TestContractPersistent runs the provisioner contract against an engine
// kept in a state file: persisting changes none of its semantics.
func TestContractPersistent(t *testing.T) {
	provisionertest.Run(t, func(t *testing.T) provisionertest.Backend {
		host, err := sim.OpenHost(sim.HostConfig{Images: []string{image}}, filepath.Join(t.TempDir(), "sim", "host.json"), quiet())
		if err != nil {
			t.Fatal(err)
		}
		return provisionertest.Backend{
			New: func(t *testing.T, installation string, policy provisioner.Policy) provisioner.Provisioner {
				return newSim(t, sim.Config{Host: host, Installation: installation, DefaultImage: image, Policy: policy,
					MinLatency: time.Millisecond, MaxLatency: 5 * time.Millisecond, Seed: 1})
			},
			Image: image,
			Kill: func(t *testing.T, ws string) {
				if err := host.Kill(ws, 137); err != nil {
					t.Fatal(err)
				}
			},
			VolumeExists: func(_ *testing.T, ws string) bool { return host.VolumeExists(ws) },
			Remove: func(t *testing.T, ws string) {
				if err := host.Remove(ws); err != nil {
					t.Fatal(err)
				}
			},
		}
	}, provisionertest.Features{Volumes: true, AgentEnv: true})
}

// TestStateFileOutlivesTheProcess: a provisioner opened on the state file
// of another finds its containers (same ids, generations, states) and
// volumes, as serve restarted on the same data dir finds Docker's; a
// planned exit that passed meanwhile is found exited (issue 15 item 6).
func TestStateFileOutlivesTheProcess(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "sim", "host.json")
	cfg := sim.Config{Installation: "inst", DefaultImage: image, StateFile: path}
	before := newSim(t, cfg)
	up, err := before.Provision(ctx, provisioner.Request{Workspace: "up", Generation: 3})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := before.Provision(ctx, provisioner.Request{Workspace: "brief", Generation: 1,
		Spec: fsm.Spec{Env: map[string]string{"AGENT_EXIT_AFTER": "300ms", "AGENT_EXIT_CODE": "7"}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := before.Provision(ctx, provisioner.Request{Workspace: "down", Generation: 2}); err != nil {
		t.Fatal(err)
	}
	if err := before.Stop(ctx, "down", 2); err != nil {
		t.Fatal(err)
	}
	// The restart happens after brief's planned exit: wait for it on the
	// first engine (its exit event), as a restart would come later still.
	exits, err := before.Watch(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	select {
	case e := <-exits:
		if e.Workspace != "brief" {
			t.Fatalf("unexpected exit %+v", e)
		}
	case <-time.After(time.Minute):
		t.Fatal("brief never exited")
	}

	after := newSim(t, cfg)
	got := map[string]provisioner.Instance{}
	list, err := after.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range list {
		got[i.Workspace] = i
	}
	if i := got["up"]; !i.Running || i.ContainerID != up.ContainerID || i.Generation != 3 || i.Image != image {
		t.Fatalf("up after reopening: %+v, want running %s at generation 3", i, up.ContainerID)
	}
	if i := got["down"]; i.Running || i.State != "exited" || i.ExitCode != 0 || i.Generation != 2 {
		t.Fatalf("down after reopening: %+v, want exited 0 at generation 2", i)
	}
	if i := got["brief"]; i.Running || i.ExitCode != 7 {
		t.Fatalf("brief after reopening: %+v, want exited 7", i)
	}
	if len(got) != 3 {
		t.Fatalf("after reopening: %d containers, want 3: %+v", len(got), got)
	}
	vols, err := after.ListVolumes(ctx)
	if err != nil || len(vols) != 3 {
		t.Fatalf("volumes after reopening: %v, %v; want 3", vols, err)
	}
	// The reopened engine carries on: adopting, and deleting for good.
	again, err := after.Provision(ctx, provisioner.Request{Workspace: "up", Generation: 3})
	if err != nil || !again.Adopted || again.ContainerID != up.ContainerID {
		t.Fatalf("provision of up again: %+v, %v; want it adopted", again, err)
	}
	if err := after.Delete(ctx, "up", 3); err != nil {
		t.Fatal(err)
	}
	third := newSim(t, cfg)
	if _, err := third.Inspect(ctx, "up"); !errors.Is(err, provisioner.ErrNotFound) {
		t.Fatalf("up after its delete and a reopening: %v, want not found", err)
	}
}

// TestStateFileRefusedClearly: a state file that cannot be read is an
// error naming it and saying what to do, not an empty engine.
func TestStateFileRefusedClearly(t *testing.T) {
	dir := t.TempDir()
	for name, body := range map[string]string{"garbage": "{not json", "future": `{"version": 99}`} {
		path := filepath.Join(dir, name+".json")
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := sim.New(sim.Config{Installation: "inst", StateFile: path, Logger: quiet()})
		if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "remove it") {
			t.Fatalf("%s: %v, want an error naming %s", name, err, path)
		}
	}
	if _, err := sim.New(sim.Config{Installation: "inst", Host: sim.NewHost(sim.HostConfig{}), StateFile: filepath.Join(dir, "x")}); err == nil {
		t.Fatal("Host and StateFile together accepted")
	}
}
