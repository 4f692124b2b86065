package provisioner_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/provisioner"
)

// TestPolicyPlan: issue 12 item 7. The policy decides what a spec may run
// with; the zero Policy is the strict default.
func TestPolicyPlan(t *testing.T) {
	const def = "turnstile-agent:abc"
	req := func(s fsm.Spec) provisioner.Request {
		return provisioner.Request{Workspace: "w", Generation: 2, Spec: s}
	}
	t.Run("DefaultsAreStrict", func(t *testing.T) {
		plan, err := provisioner.Policy{}.Plan("provision", req(fsm.Spec{Labels: map[string]string{"team": "infra"}}), def)
		if err != nil {
			t.Fatal(err)
		}
		p := plan.Profile
		if plan.Image != def || p.Name != provisioner.ProfileRestricted || !p.NoNewPrivileges || !p.ReadOnlyRootfs ||
			!p.NonRoot || len(p.CapAdd) != 0 {
			t.Fatalf("plan %+v: want the default image, restricted with no capabilities", plan)
		}
		if plan.MemoryBytes != 512<<20 || plan.CPUs != 1 || plan.PidsLimit != 512 || plan.TmpBytes != 64<<20 {
			t.Fatalf("limits %+v: want 512 MiB, 1 CPU, 512 pids, 64 MiB /tmp", plan)
		}
		if len(plan.Labels) != 1 || plan.Labels["turnstile.label.team"] != "infra" {
			t.Fatalf("labels %v: want team under turnstile.label.", plan.Labels)
		}
	})
	t.Run("SmallestCPULimit", func(t *testing.T) {
		plan, err := provisioner.Policy{MaxCPUs: 1}.Plan("provision", req(fsm.Spec{CPUs: fsm.MinCPUs}), def)
		if err != nil || plan.NanoCPUs() != 1e7 {
			t.Fatalf("plan %+v (nano CPUs %d), %v: want 0.01 CPU sent as 1e7", plan, plan.NanoCPUs(), err)
		}
	})
	t.Run("SpecLimitsKept", func(t *testing.T) {
		plan, err := provisioner.Policy{}.Plan("provision", req(fsm.Spec{CPUs: 0.5, MemoryBytes: 64 << 20}), def)
		if err != nil || plan.CPUs != 0.5 || plan.MemoryBytes != 64<<20 {
			t.Fatalf("plan %+v, %v: want the spec's own limits", plan, err)
		}
	})
	t.Run("NoLimits", func(t *testing.T) {
		pol := provisioner.Policy{DefaultMemoryBytes: -1, DefaultCPUs: -1, PidsLimit: -1}
		plan, err := pol.Plan("provision", req(fsm.Spec{}), def)
		if err != nil || plan.CPUs != 0 || plan.MemoryBytes != 0 || plan.PidsLimit != 0 {
			t.Fatalf("plan %+v, %v: want no limits", plan, err)
		}
	})
	t.Run("AllowedLooserProfile", func(t *testing.T) {
		pol := provisioner.Policy{AllowedProfiles: []string{"restricted", "standard"}}
		plan, err := pol.Plan("provision", req(fsm.Spec{Profile: "standard"}), def)
		if err != nil || plan.Profile.Name != "standard" || plan.Profile.ReadOnlyRootfs || plan.Profile.NonRoot ||
			!plan.Profile.NoNewPrivileges || len(plan.Profile.CapAdd) == 0 {
			t.Fatalf("plan %+v, %v: want standard", plan, err)
		}
	})
	t.Run("StricterThanDefaultAllowed", func(t *testing.T) {
		pol := provisioner.Policy{DefaultProfile: "standard"}
		plan, err := pol.Plan("provision", req(fsm.Spec{Profile: "restricted"}), def)
		if err != nil || plan.Profile.Name != "restricted" {
			t.Fatalf("plan %+v, %v: asking for a stricter profile than the default must be allowed", plan, err)
		}
		if plan, err := pol.Plan("provision", req(fsm.Spec{}), def); err != nil || plan.Profile.Name != "standard" {
			t.Fatalf("plan %+v, %v: want the default standard", plan, err)
		}
	})
	t.Run("Images", func(t *testing.T) {
		pol := provisioner.Policy{AllowedImages: []string{"registry.example/team/*", "alpine:3.*"}}
		for image, ok := range map[string]bool{
			def:                                  true,
			"registry.example/team/app:1":        true,
			"registry.example/team/sub/app:1":    false, // '*' stays within a segment
			"registry.example/other/app:1":       false,
			"alpine:3.20":                        true,
			"docker.io/library/alpine:3.20":      true, // the same image, written in full
			"alpine:edge":                        false,
			"registry.example.evil/team/app:1":   false,
			"turnstile-agent:other":              false,
			"0123456789abcdef0123456789abcdef01": false,
			// Docker resolves a reference with a tag and a digest by the
			// digest alone (moby reference/store.go, Get): the tag that
			// matched the pattern says nothing of the image that runs,
			// which may be alpine:edge. Found in review.
			"alpine:3.20@sha256:" + strings.Repeat("ab", 32):                   false,
			"docker.io/library/alpine:3.20@sha256:" + strings.Repeat("ab", 32): false,
			"registry.example/team/app:1@sha256:" + strings.Repeat("ab", 32):   false,
		} {
			_, err := pol.Plan("provision", req(fsm.Spec{Image: image}), def)
			if ok != (err == nil) {
				t.Errorf("image %s: %v; want allowed %v", image, err, ok)
			}
			if !ok && (provisioner.CodeOf(err) != provisioner.CodeNotAllowed || !strings.Contains(provisioner.ReasonOf(err), "--allowed-images")) {
				t.Errorf("image %s: %v; want not_allowed naming --allowed-images", image, err)
			}
		}
	})
	for _, tc := range []struct {
		name string
		pol  provisioner.Policy
		spec fsm.Spec
		code provisioner.Code
		says string
	}{
		{"ImageNotAllowed", provisioner.Policy{}, fsm.Spec{Image: "alpine:3"}, provisioner.CodeNotAllowed, "image alpine:3 is not allowed here"},
		{"ProfileNotAllowed", provisioner.Policy{}, fsm.Spec{Profile: "standard"}, provisioner.CodeNotAllowed, "security profile standard is not allowed here: serve allows restricted (--allowed-profiles)"},
		{"ProfileUnknown", provisioner.Policy{AllowedProfiles: []string{"restricted", "standard"}}, fsm.Spec{Profile: "privileged"}, provisioner.CodeInvalid, `security profile "privileged" does not exist`},
		{"MemoryAboveMax", provisioner.Policy{MaxMemoryBytes: 1 << 30}, fsm.Spec{MemoryBytes: 2 << 30}, provisioner.CodeNotAllowed,
			"memory limit 2g is above the maximum 1g that serve allows (--max-memory): ask for 1g or less"},
		{"MemoryOddAboveMax", provisioner.Policy{MaxMemoryBytes: 1536 << 20}, fsm.Spec{MemoryBytes: 1536<<20 + 1}, provisioner.CodeNotAllowed,
			"memory limit 1610612737 bytes is above the maximum 1536m"},
		{"NoMemoryLimitAboveMax", provisioner.Policy{MaxMemoryBytes: 1 << 30, DefaultMemoryBytes: -1}, fsm.Spec{}, provisioner.CodeNotAllowed,
			"no memory limit is above the maximum 1g"},
		{"CPUsAboveMax", provisioner.Policy{MaxCPUs: 2}, fsm.Spec{CPUs: 4}, provisioner.CodeNotAllowed,
			"CPU limit 4 is above the maximum 2 that serve allows (--max-cpus): ask for 2 or less"},
		{"NoCPULimitAboveMax", provisioner.Policy{MaxCPUs: 1.5, DefaultCPUs: -1}, fsm.Spec{}, provisioner.CodeNotAllowed,
			"no CPU limit is above the maximum 1.5"},
		// Docker enforces no CPU limit below 0.01 (NanoCPUs 0, or a CFS
		// quota that rounds to 0): such a limit is no limit, past the
		// maximum and the 1-CPU default.
		{"CPUsTiny", provisioner.Policy{MaxCPUs: 1}, fsm.Spec{CPUs: 1e-10}, provisioner.CodeInvalid, "below 0.01"},
		{"CPUsQuotaZero", provisioner.Policy{MaxCPUs: 1}, fsm.Spec{CPUs: 4e-6}, provisioner.CodeInvalid, "below 0.01"},
		{"DefaultCPUsTiny", provisioner.Policy{DefaultCPUs: 1e-10}, fsm.Spec{}, provisioner.CodeInvalid, "below 0.01"},
		{"ReservedLabel", provisioner.Policy{}, fsm.Spec{Labels: map[string]string{"com.docker.x": "1"}}, provisioner.CodeInvalid, "reserved"},
		{"NoImage", provisioner.Policy{}, fsm.Spec{}, provisioner.CodeInvalid, "no default image"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := def
			if tc.name == "NoImage" {
				d = ""
			}
			_, err := tc.pol.Plan("provision", req(tc.spec), d)
			var pe *provisioner.Error
			if !errors.As(err, &pe) || pe.Code != tc.code || !strings.Contains(pe.Reason, tc.says) || !pe.Permanent() ||
				pe.Workspace != "w" || pe.Generation != 2 {
				t.Fatalf("Plan: %v; want a permanent %s error for w at generation 2 saying %q", err, tc.code, tc.says)
			}
		})
	}
}

func TestPolicyValidate(t *testing.T) {
	if err := (provisioner.Policy{}).Validate(); err != nil {
		t.Fatalf("zero policy: %v", err)
	}
	for name, tc := range map[string]struct {
		pol  provisioner.Policy
		says string
	}{
		"BadPattern":        {provisioner.Policy{AllowedImages: []string{"registry/[a"}}, "not a pattern"},
		"EmptyPattern":      {provisioner.Policy{AllowedImages: []string{" "}}, "not a pattern"},
		"UnknownProfile":    {provisioner.Policy{AllowedProfiles: []string{"restricted", "privileged"}}, `"privileged" does not exist`},
		"DefaultNotAllowed": {provisioner.Policy{DefaultProfile: "standard", AllowedProfiles: []string{"restricted"}}, "not among the allowed"},
		"DefaultAboveMax":   {provisioner.Policy{MaxMemoryBytes: 256 << 20}, "within the maximum memory"},
		"NoLimitWithMax":    {provisioner.Policy{MaxCPUs: 2, DefaultCPUs: -1}, "within the maximum CPUs"},
		"TinyDefault":       {provisioner.Policy{DefaultMemoryBytes: 1024}, "minimum"},
		"TinyDefaultCPUs":   {provisioner.Policy{DefaultCPUs: 4e-6}, "no limit at all"},
		"TinyMaxCPUs":       {provisioner.Policy{MaxCPUs: 0.001, DefaultCPUs: 0.001}, "no limit at all"},
	} {
		if err := tc.pol.Validate(); err == nil || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("%s: %v; want an error saying %q", name, err, tc.says)
		}
	}
}

func TestIsRootUser(t *testing.T) {
	for user, root := range map[string]bool{
		"": true, "root": true, "0": true, "0:0": true, "root:root": true, "00": true, " ": true,
		// The engine reads a uid with strconv.Atoi: a sign is no less
		// root (USER +0 once ran as uid 0 under restricted).
		"+0": true, "-0": true, "000": true, "+0:+0": true, " 0": true, "0 ": true, " +0 :0": true,
		"65534:65534": false, "1000": false, "app": false, "app:0": false, "+1000": false, "0x0": false, "-1": false,
	} {
		if got := provisioner.IsRootUser(user); got != root {
			t.Errorf("IsRootUser(%q) = %v, want %v", user, got, root)
		}
	}
}
