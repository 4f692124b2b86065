package main

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"

	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/provisioner"
)

// servePolicy is the provisioner policy serve builds from args and env.
func servePolicy(t *testing.T, env map[string]string, args ...string) (provisioner.Policy, error) {
	t.Helper()
	a := &app{getenv: func(k string) string { return env[k] }}
	serve, _, err := a.rootCmd().Find([]string{"serve"})
	if err != nil {
		t.Fatal(err)
	}
	if err := serve.ParseFlags(args); err != nil {
		t.Fatal(err)
	}
	if _, err := bindEnv(serve, a.getenv); err != nil {
		t.Fatal(err)
	}
	c, err := serveConfigOf(serve.Flags())
	if err != nil {
		t.Fatal(err)
	}
	return c.policy()
}

// TestServeDefaultMaximums: callers of the API and NATS are not trusted,
// so serve's flags as shipped bound what a spec may ask for: at most 4g of
// memory (Docker takes any memory limit, so 1000g ran unbounded and could
// take the host's memory) and at most the host's CPUs (which Docker
// refuses only when it creates the container). The policy refuses more
// where it judges a spec, in Provision before anything is touched, with a
// reason that names the limit and the flag.
func TestServeDefaultMaximums(t *testing.T) {
	const image = "turnstile-agent:test"
	pol, err := servePolicy(t, nil)
	if err != nil {
		t.Fatal(err)
	}
	cpus := float64(min(runtime.NumCPU(), fsm.MaxCPUs))
	plan := func(s fsm.Spec) (provisioner.Plan, error) {
		return pol.Plan("provision", provisioner.Request{Workspace: "ws-1", Generation: 1, Spec: s}, image)
	}
	for _, tc := range []struct {
		name string
		spec fsm.Spec
		says []string
	}{
		{"Memory8g", fsm.Spec{MemoryBytes: 8 << 30}, []string{"memory limit 8g", "maximum 4g", "(--max-memory)"}},
		{"Memory1000g", fsm.Spec{MemoryBytes: 1000 << 30}, []string{"memory limit 1000g", "maximum 4g", "(--max-memory)"}},
		{"MemoryJustAbove", fsm.Spec{MemoryBytes: 4<<30 + 1}, []string{"memory limit 4294967297 bytes", "maximum 4g"}},
		{"CPUsAboveHost", fsm.Spec{CPUs: cpus + 0.5}, []string{fmt.Sprintf("CPU limit %v ", cpus+0.5), fmt.Sprintf("maximum %v ", cpus), "(--max-cpus)"}},
		{"CPUsAtFSMMax", fsm.Spec{CPUs: fsm.MaxCPUs}, []string{fmt.Sprintf("CPU limit %d ", fsm.MaxCPUs), "(--max-cpus)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.name == "CPUsAtFSMMax" && cpus >= fsm.MaxCPUs {
				t.Skipf("this host has %v CPUs: fsm.MaxCPUs is within them", cpus)
			}
			p, err := plan(tc.spec)
			var pe *provisioner.Error
			if !errors.As(err, &pe) || pe.Code != provisioner.CodeNotAllowed || !pe.Permanent() {
				t.Fatalf("Plan of %+v: %+v, %v; want a permanent not_allowed refusal", tc.spec, p, err)
			}
			for _, s := range tc.says {
				if !strings.Contains(pe.Reason, s) {
					t.Errorf("reason %q does not say %q", pe.Reason, s)
				}
			}
		})
	}
	t.Run("Within", func(t *testing.T) {
		p, err := plan(fsm.Spec{MemoryBytes: 4 << 30, CPUs: cpus})
		if err != nil || p.MemoryBytes != 4<<30 || p.CPUs != cpus {
			t.Fatalf("Plan at the maximums: %+v, %v; want 4g and %v CPUs", p, err, cpus)
		}
		p, err = plan(fsm.Spec{})
		if err != nil || p.MemoryBytes != 512<<20 || p.CPUs != 1 {
			t.Fatalf("Plan of a spec with no limits: %+v, %v; want the defaults 512m and 1 CPU", p, err)
		}
	})
	t.Run("ZeroIsNoMaximum", func(t *testing.T) {
		pol, err := servePolicy(t, map[string]string{"TURNSTILE_MAX_MEMORY": "0"}, "--max-cpus", "0")
		if err != nil || pol.MaxMemoryBytes != 0 || pol.MaxCPUs != 0 {
			t.Fatalf("policy %+v, %v; want no maximums", pol, err)
		}
		p, err := pol.Plan("provision", provisioner.Request{Workspace: "ws-1", Generation: 1,
			Spec: fsm.Spec{MemoryBytes: 1000 << 30, CPUs: fsm.MaxCPUs}}, image)
		if err != nil || p.MemoryBytes != 1000<<30 || p.CPUs != fsm.MaxCPUs {
			t.Fatalf("Plan with no maximums: %+v, %v; want the spec's limits", p, err)
		}
	})
}

// TestServeDefaultsWithinMaximums: a default above the maximum (which
// serve refuses before it starts anything) is named by its flags, with
// what to change; --max-memory 0 still lets an operator have any default.
func TestServeDefaultsWithinMaximums(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		says []string
	}{
		{"MemoryAboveDefaultMax", []string{"--default-memory", "8g"}, []string{"--default-memory 8g", "--max-memory 4g", "--max-memory 0"}},
		{"NoMemoryLimitWithDefaultMax", []string{"--default-memory", "0"}, []string{"--default-memory 0 (no limit)", "--max-memory 4g"}},
		{"CPUsAboveMax", []string{"--default-cpus", "3", "--max-cpus", "2"}, []string{"--default-cpus 3", "--max-cpus 2", "--max-cpus 0"}},
		{"NoCPULimitWithMax", []string{"--default-cpus", "0", "--max-cpus", "2"}, []string{"--default-cpus 0 (no limit)", "--max-cpus 2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pol, err := servePolicy(t, nil, tc.args...)
			if err == nil {
				t.Fatalf("policy %+v: want a default above the maximum refused", pol)
			}
			for _, s := range tc.says {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not say %q", err, s)
				}
			}
		})
	}
	for _, args := range [][]string{
		{"--default-memory", "8g", "--max-memory", "0"},
		{"--default-memory", "0", "--default-cpus", "0", "--max-memory", "0", "--max-cpus", "0"},
		{"--default-memory", "4g"},
	} {
		if pol, err := servePolicy(t, nil, args...); err != nil {
			t.Errorf("%v: %+v, %v; want it taken", args, pol, err)
		}
	}
}

// TestServeRefusesASpecBeyondItsPolicy: serve's engine judges a create's or
// a configure's spec by serve's policy when it decides it (admitSpec), so
// a spec the provisioner would refuse is refused at once, invalid (exit 2)
// with the policy's reason, and nothing is stored: before, the create was
// accepted and the workspace failed at provisioning. A spec within runs.
func TestServeRefusesASpecBeyondItsPolicy(t *testing.T) {
	s := startInProcessServe(t, map[string]string{"TURNSTILE_ALLOWED_IMAGES": "team/*"})
	for _, tc := range []struct {
		args []string
		says string
	}{
		{[]string{"create", "big", "--memory", "8g", "--wait"}, "memory limit 8g is above the maximum 4g that serve allows (--max-memory)"},
		{[]string{"create", "big", "--cpus", "1024", "--wait"}, "(--max-cpus)"},
		{[]string{"create", "big", "--image", "elsewhere/x:1", "--wait"}, "--allowed-images"},
	} {
		code, out, errs := runCLI(t, s.env, tc.args...)
		if code != exitUsage || !strings.Contains(errs, tc.says) {
			t.Fatalf("%v: exit %d, stdout %q, stderr %q; want exit %d saying %q", tc.args, code, out, errs, exitUsage, tc.says)
		}
	}
	if code, out, errs := runCLI(t, s.env, "history", "big"); code != exitRejected {
		t.Fatalf("history of a workspace whose creates were refused: exit %d\n%s%s", code, out, errs)
	}
	if code, out, errs := runCLI(t, s.env, "create", "fits", "--memory", "4g", "--image", "team/x:1", "--wait"); code != exitOK {
		t.Fatalf("create within the policy: exit %d\n%s%s", code, out, errs)
	}
	code, out, errs := runCLI(t, s.env, "configure", "fits", "--memory", "5g", "--wait")
	if code != exitUsage || !strings.Contains(errs, "(--max-memory)") {
		t.Fatalf("configure above the maximum: exit %d, stdout %q, stderr %q", code, out, errs)
	}
}

// TestBannerNamesTheMaximums: serve's start banner says what a spec may ask
// for at most, beside the defaults ("none" for 0).
func TestBannerNamesTheMaximums(t *testing.T) {
	c := serveConfig{defaultProfile: "restricted", defaultMemory: "512m", defaultCPUs: 1, pidsLimit: 512, maxMemory: "4g", maxCPUs: 2}
	if got := describePolicy(c); !strings.HasSuffix(got, "defaults: memory 512m, cpus 1, pids 512; at most: memory 4g, cpus 2") {
		t.Fatalf("banner: %q", got)
	}
	c.maxMemory, c.maxCPUs = "0", 0
	if got := describePolicy(c); !strings.HasSuffix(got, "at most: memory none, cpus none") {
		t.Fatalf("banner with no maximums: %q", got)
	}
}
