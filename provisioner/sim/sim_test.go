package sim_test

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/provisioner"
	"github.com/turnstile-dev/turnstile/provisioner/provisionertest"
	"github.com/turnstile-dev/turnstile/provisioner/sim"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const image = "sim/agent:test"

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

func newSim(t *testing.T, cfg sim.Config) *sim.Provisioner {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = quiet()
	}
	p, err := sim.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestContract(t *testing.T) {
	provisionertest.Run(t, func(t *testing.T) provisionertest.Backend {
		host := sim.NewHost(sim.HostConfig{Images: []string{image}})
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

func TestNew(t *testing.T) {
	for name, cfg := range map[string]sim.Config{
		"NoInstallation": {},
		"BadLatency":     {Installation: "a", MinLatency: time.Second, MaxLatency: time.Millisecond},
		"BadFailureRate": {Installation: "a", FailureRate: 1.5},
	} {
		if _, err := sim.New(cfg); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

// outcomes provisions n workspaces in order and records which failed.
func outcomes(t *testing.T, seed uint64, n int) []bool {
	p := newSim(t, sim.Config{Installation: "det", DefaultImage: image, FailureRate: 0.5, Seed: seed})
	var out []bool
	for i := range n {
		_, err := p.Provision(context.Background(), provisioner.Request{Workspace: "w" + string(rune('a'+i)), Generation: 1})
		if err != nil && provisioner.CodeOf(err) != provisioner.CodeEngine {
			t.Fatalf("unexpected error: %v", err)
		}
		out = append(out, err != nil)
	}
	return out
}

func TestDeterministicFailures(t *testing.T) {
	a, b := outcomes(t, 42, 20), outcomes(t, 42, 20)
	failed := 0
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("same seed, different outcomes: %v vs %v", a, b)
		}
		if a[i] {
			failed++
		}
	}
	if failed == 0 || failed == len(a) {
		t.Fatalf("failure rate 0.5 gave %d failures of %d", failed, len(a))
	}
	var pe *provisioner.Error
	p := newSim(t, sim.Config{Installation: "all", DefaultImage: image, FailureRate: 1})
	_, err := p.Provision(context.Background(), provisioner.Request{Workspace: "x", Generation: 1})
	if !errors.As(err, &pe) || pe.Permanent() {
		t.Fatalf("simulated failure %v: want a transient *provisioner.Error", err)
	}
}

func TestLatency(t *testing.T) {
	p := newSim(t, sim.Config{Installation: "slow", DefaultImage: image, MinLatency: 100 * time.Millisecond, MaxLatency: 150 * time.Millisecond})
	began := time.Now()
	if _, err := p.Provision(context.Background(), provisioner.Request{Workspace: "x", Generation: 1}); err != nil {
		t.Fatal(err)
	}
	if el := time.Since(began); el < 100*time.Millisecond {
		t.Fatalf("Provision took %v, less than the minimum latency", el)
	}
}

func TestRemoveReportsExitThenRemoval(t *testing.T) {
	p := newSim(t, sim.Config{Installation: "rm", DefaultImage: image})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := p.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Provision(ctx, provisioner.Request{Workspace: "x", Generation: 2, Spec: fsm.Spec{}}); err != nil {
		t.Fatal(err)
	}
	if err := p.Host().Remove("x"); err != nil {
		t.Fatal(err)
	}
	exit, removal := <-ch, <-ch
	if exit.Removed || exit.ExitCode == nil || *exit.ExitCode != 137 || exit.Generation != 2 {
		t.Fatalf("first report %+v, want the exit with code 137", exit)
	}
	if !removal.Removed || removal.ContainerID != exit.ContainerID {
		t.Fatalf("second report %+v, want the removal", removal)
	}
	if err := p.Host().Remove("x"); !errors.Is(err, provisioner.ErrNotFound) {
		t.Fatalf("second Remove: %v, want ErrNotFound", err)
	}
	if !p.Host().VolumeExists("x") {
		t.Fatal("docker rm -f must keep the volume")
	}
}

func TestExitAfterReady(t *testing.T) {
	p := newSim(t, sim.Config{Installation: "late", DefaultImage: image})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := p.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	spec := fsm.Spec{Env: map[string]string{"AGENT_EXIT_AFTER": "50ms", "AGENT_EXIT_CODE": "9"}}
	if _, err := p.Provision(ctx, provisioner.Request{Workspace: "x", Generation: 1, Spec: spec}); err != nil {
		t.Fatal(err)
	}
	select {
	case ex := <-ch:
		if ex.ExitCode == nil || *ex.ExitCode != 9 {
			t.Fatalf("exit %+v, want code 9", ex)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no exit reported")
	}
}

func TestConcurrentWorkspaces(t *testing.T) {
	p := newSim(t, sim.Config{Installation: "many", DefaultImage: image, MaxLatency: time.Millisecond, Seed: 7})
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Go(func() {
			ws := "w" + string(rune('a'+i%26)) + string(rune('a'+i/26))
			for gen := uint64(1); gen <= 3; gen++ {
				if _, err := p.Provision(context.Background(), provisioner.Request{Workspace: ws, Generation: gen}); err != nil {
					t.Error(err)
				}
			}
			if err := p.Delete(context.Background(), ws, 4); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if l, _ := p.List(context.Background()); len(l) != 0 {
		t.Fatalf("List after deleting everything: %d containers", len(l))
	}
}

// TestProfileRecorded: issue 12 item 7. The simulated container carries the
// profile the policy chose: the default when the spec names none.
func TestProfileRecorded(t *testing.T) {
	p := newSim(t, sim.Config{Installation: "prof", DefaultImage: image,
		Policy: provisioner.Policy{AllowedProfiles: []string{provisioner.ProfileRestricted, provisioner.ProfileStandard}}})
	ctx := context.Background()
	if _, err := p.Provision(ctx, provisioner.Request{Workspace: "a", Generation: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Provision(ctx, provisioner.Request{Workspace: "b", Generation: 1, Spec: fsm.Spec{Profile: provisioner.ProfileStandard}}); err != nil {
		t.Fatal(err)
	}
	if a, b := p.Host().Profile("a"), p.Host().Profile("b"); a != provisioner.ProfileRestricted || b != provisioner.ProfileStandard {
		t.Fatalf("profiles %q, %q; want restricted (the default) and standard", a, b)
	}
}
