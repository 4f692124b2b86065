package status_test

import (
	"strings"
	"testing"

	"github.com/turnstile-dev/turnstile/status"
)

// A container engine's identity names its kind first, and the PROVISIONER
// column shortens it: the Docker daemon ID to 12 characters, every
// simulator to "sim".
func TestShortProvisioner(t *testing.T) {
	docker := status.DockerProvisioner("5ZQH:ABCD:EFGH:IJKL:MNOP")
	sim := status.SimProvisioner("/srv/a/.turnstile/sim/host.json", "host-a")
	if docker != "docker 5ZQH:ABCD:EFGH:IJKL:MNOP" || sim != "sim /srv/a/.turnstile/sim/host.json@host-a" {
		t.Fatalf("identities %q, %q", docker, sim)
	}
	for _, tc := range []struct{ identity, kind, short string }{
		{docker, status.KindDocker, "docker 5ZQH:ABCD:EF"},
		{status.DockerProvisioner("abc"), status.KindDocker, "docker abc"},
		{sim, status.KindSim, "sim"},
		{"", "", ""},
	} {
		if got := status.ProvisionerKind(tc.identity); got != tc.kind {
			t.Errorf("ProvisionerKind(%q) = %q, want %q", tc.identity, got, tc.kind)
		}
		if got := status.ShortProvisioner(tc.identity); got != tc.short {
			t.Errorf("ShortProvisioner(%q) = %q, want %q", tc.identity, got, tc.short)
		}
	}
}

// Serves on different container engines are named under attention: a
// simulator beside Docker as another engine (use one Docker engine),
// several simulators in a line of their own (each fails the others'
// workspaces; fine for load tests); one engine, or none announced, not.
func TestOtherProvisioners(t *testing.T) {
	const dockerA, dockerB = "docker AAAA", "docker BBBB"
	const simA, simB = "sim /a/sim/host.json@a", "sim /b/sim/host.json@b"
	for _, tc := range []struct {
		name  string
		on    []string // the provisioners of serves s0, s1, ...
		wants []string // in the one line; nil: no line
	}{
		{"OneDocker", []string{dockerA, dockerA, ""}, nil},
		{"OneSimulator", []string{simA, ""}, nil},
		{"TwoDockers", []string{dockerA, dockerB}, []string{"2 different container engines (s0 on docker AAAA (hint 0); s1 on docker BBBB (hint 1))",
			"restart the serves onto one Docker engine"}},
		{"SimulatorBesideDocker", []string{dockerA, simA, dockerA}, []string{"2 different container engines (s0, s2 on docker AAAA (hint 0); s1 on " + simA + " (hint 1))",
			"restart the serves onto one Docker engine"}},
		{"TwoSimulators", []string{simA, simB, simA}, []string{"2 different simulators (s0, s2 on " + simA + " (hint 0); s1 on " + simB + " (hint 1))",
			"each serve reports the running workspaces simulated by another as exited", "run one serve, or all on one Docker engine"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var rep status.Report
			for i, p := range tc.on {
				rep.Engines = append(rep.Engines, status.Engine{Name: "s" + string(rune('0'+i)), Provisioner: p,
					ProvisionerHint: map[bool]string{true: "hint " + string(rune('0'+i))}[p != ""]})
			}
			got := rep.OtherProvisioners()
			if tc.wants == nil {
				if len(got) != 0 {
					t.Fatalf("OtherProvisioners() = %q, want none", got)
				}
				return
			}
			if len(got) != 1 {
				t.Fatalf("OtherProvisioners() = %q, want one line", got)
			}
			for _, want := range tc.wants {
				if !strings.Contains(got[0], want) {
					t.Errorf("OtherProvisioners() = %q, does not say %q", got[0], want)
				}
			}
		})
	}
}
