package fsm_test

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/turnstile-dev/turnstile/fsm"
)

func TestValidateRefuses(t *testing.T) {
	ok := func() fsm.Command { return command("ws-1", fsm.Start) }
	user := func(mut func(*fsm.Command)) fsm.Command { c := ok(); mut(&c); return c }
	sys := func(t fsm.CommandType, mut func(*fsm.Command)) fsm.Command {
		c := system("ws-1", t, 1)
		mut(&c)
		return c
	}
	configure := func(s fsm.Spec) fsm.Command { return withSpec(command("ws-1", fsm.Configure), s) }
	id := func(id string) fsm.Command { return user(func(c *fsm.Command) { c.Workspace = id }) }
	cmdID := func(id string) fsm.Command { return user(func(c *fsm.Command) { c.ID = id }) }
	many := func(n int) map[string]string {
		m := map[string]string{}
		for i := range n {
			m[fmt.Sprintf("K%d", i)] = "v"
		}
		return m
	}
	long := strings.Repeat("x", fsm.MaxValueLen+1)

	cases := []struct {
		name string
		cmd  fsm.Command
		says string // the message names what is wrong
	}{
		{"id/dot", id("."), "not a DNS label"},
		{"id/dotted", id("a.b"), "not a DNS label"},
		{"id/star", id("*"), "not a DNS label"},
		{"id/gt", id(">"), "not a DNS label"},
		{"id/wildcard_suffix", id("a.>"), "not a DNS label"},
		{"id/space", id("my ws"), "not a DNS label"},
		{"id/only_space", id(" "), "not a DNS label"},
		{"id/unicode", id("wörkspace"), "not a DNS label"},
		{"id/emoji", id("ws-🚀"), "not a DNS label"},
		{"id/empty", id(""), "workspace id is empty"},
		{"id/64_chars", id(strings.Repeat("a", 64)), "at most 63"},
		{"id/very_long", id(strings.Repeat("a", 1000)), "at most 63"},
		{"id/uppercase", id("Alpha"), "not a DNS label"},
		{"id/leading_hyphen", id("-a"), "not a DNS label"},
		{"id/trailing_hyphen", id("a-"), "not a DNS label"},
		{"id/underscore", id("a_b"), "not a DNS label"},
		{"id/slash", id("a/b"), "not a DNS label"},
		{"id/newline", id("a\n"), "not a DNS label"},
		{"command_id/empty", cmdID(""), "command id"},
		{"command_id/space", cmdID("a b"), "command id"},
		{"command_id/dot", cmdID("a.b"), "command id"},
		{"command_id/star", cmdID("*"), "command id"},
		{"command_id/gt", cmdID(">"), "command id"},
		// issue 12 item 3: a user command may not take a report's id.
		{"command_id/reserved", cmdID("sys-provision-victim-g1"), "reserved for Turnstile's own reports"},
		{"command_id/reserved-prefix-only", cmdID("sys-"), "reserved"},
		{"command_id/unicode", cmdID("befehl-ä"), "command id"},
		{"command_id/129_chars", cmdID(strings.Repeat("c", 129)), "command id"},
		{"type/empty", user(func(c *fsm.Command) { c.Type = "" }), "unknown command type"},
		{"type/unknown", user(func(c *fsm.Command) { c.Type = "launch" }), "unknown command type \"launch\""},
		{"type/uppercase", user(func(c *fsm.Command) { c.Type = "START" }), "unknown command type"},
		{"type/event_name", user(func(c *fsm.Command) { c.Type = fsm.CommandType(fsm.Created) }), "unknown command type"},
		{"user/generation", user(func(c *fsm.Command) { c.Generation = 3 }), "user command"},
		{"user/reason", user(func(c *fsm.Command) { c.Reason = "because" }), "user command"},
		{"user/exit_code", user(func(c *fsm.Command) { c.ExitCode = new(1) }), "user command"},
		{"system/no_generation", sys(fsm.ProvisionSucceeded, func(c *fsm.Command) { c.Generation = 0 }), "needs the generation"},
		{"system/deadline_no_generation", sys(fsm.DeadlineExceeded, func(c *fsm.Command) { c.Generation = 0 }), "needs the generation"},
		{"system/exit_code_elsewhere", sys(fsm.ProvisionFailed, func(c *fsm.Command) { c.ExitCode = new(1) }), "exit_code belongs to container_exited"},
		{"system/spec", sys(fsm.ProvisionSucceeded, func(c *fsm.Command) { c.Spec = &fsm.Spec{} }), "takes no spec"},
		{"system/reason_too_long", sys(fsm.ProvisionFailed, func(c *fsm.Command) { c.Reason = strings.Repeat("r", fsm.MaxReasonLen+1) }), "reason is"},
		{"start/spec", withSpec(ok(), specA), "start takes no spec"},
		{"restart/spec", withSpec(command("ws-1", fsm.Restart), specA), "restart takes no spec"},
		{"delete/spec", withSpec(command("ws-1", fsm.Delete), specA), "delete takes no spec"},
		{"configure/no_spec", command("ws-1", fsm.Configure), "configure needs a spec"},
		{"actor/too_long", user(func(c *fsm.Command) { c.Actor = strings.Repeat("a", fsm.MaxActorLen+1) }), "actor is"},
		{"spec/image_space", configure(fsm.Spec{Image: "busy box"}), "spec.image"},
		{"spec/image_newline", configure(fsm.Spec{Image: "busybox\n"}), "spec.image"},
		{"spec/image_too_long", configure(fsm.Spec{Image: strings.Repeat("i", fsm.MaxImageLen+1)}), "spec.image"},
		// 0 is no limit of its own: serve's --default-cpus and
		// --default-memory apply.
		{"spec/cpus_negative", configure(fsm.Spec{CPUs: -1}), "spec.cpus -1 is out of range 0-1024 (0: serve's default)"},
		{"spec/cpus_too_many", configure(fsm.Spec{CPUs: fsm.MaxCPUs + 1}), "spec.cpus"},
		{"spec/cpus_infinite", configure(fsm.Spec{CPUs: math.Inf(1)}), "spec.cpus"},
		// Docker enforces no CPU limit below 0.01: 1e-10 was sent as
		// NanoCPUs 0, 4e-6 as a CFS quota of 0, both "no limit".
		{"spec/cpus_tiny", configure(fsm.Spec{CPUs: 1e-10}), "spec.cpus 1e-10 is below 0.01"},
		{"spec/cpus_quota_zero", configure(fsm.Spec{CPUs: 4e-6}), "spec.cpus 4e-06 is below 0.01"},
		{"spec/cpus_below_min", configure(fsm.Spec{CPUs: 0.0099}), "use 0 (serve's default) or 0.01-1024"},
		// NaN passes both "< 0" and "> max" checks; its event could not be encoded.
		{"spec/cpus_nan", configure(fsm.Spec{CPUs: math.NaN()}), "spec.cpus NaN"},
		{"spec/memory_negative", configure(fsm.Spec{MemoryBytes: -1}), "spec.memory_bytes"},
		{"spec/memory_tiny", configure(fsm.Spec{MemoryBytes: 1024}), "spec.memory_bytes 1024 is out of range: 0 (serve's default) or at least 6291456"},
		{"spec/env_key_digit", configure(fsm.Spec{Env: map[string]string{"1X": "v"}}), "spec.env key"},
		{"spec/env_key_hyphen", configure(fsm.Spec{Env: map[string]string{"A-B": "v"}}), "spec.env key"},
		{"spec/env_key_empty", configure(fsm.Spec{Env: map[string]string{"": "v"}}), "spec.env key"},
		{"spec/env_value_too_long", configure(fsm.Spec{Env: map[string]string{"A": long}}), "spec.env[A]"},
		{"spec/env_too_many", configure(fsm.Spec{Env: many(fsm.MaxEnvVars + 1)}), "spec.env has"},
		{"spec/label_reserved", configure(fsm.Spec{Labels: map[string]string{"turnstile.generation": "1"}}), "spec.labels key"},
		// issue 12 item 7: Docker's and the OCI's namespaces are reserved
		// too, whatever the case, so a label cannot pose as the engine's or
		// the image's own.
		{"spec/label_reserved_case", configure(fsm.Spec{Labels: map[string]string{"Turnstile.Workspace": "x"}}), "is reserved"},
		{"spec/label_com_docker", configure(fsm.Spec{Labels: map[string]string{"com.docker.compose.project": "x"}}), "com.docker."},
		{"spec/label_io_docker", configure(fsm.Spec{Labels: map[string]string{"io.docker.x": "x"}}), "is reserved"},
		{"spec/label_dockerproject", configure(fsm.Spec{Labels: map[string]string{"org.dockerproject.x": "x"}}), "is reserved"},
		{"spec/label_oci", configure(fsm.Spec{Labels: map[string]string{"org.opencontainers.image.source": "x"}}), "org.opencontainers."},
		{"spec/profile_uppercase", configure(fsm.Spec{Profile: "Standard"}), "spec.profile"},
		{"spec/profile_space", configure(fsm.Spec{Profile: "a b"}), "spec.profile"},
		{"spec/profile_too_long", configure(fsm.Spec{Profile: strings.Repeat("p", 33)}), "spec.profile"},
		{"spec/label_key_empty", configure(fsm.Spec{Labels: map[string]string{"": "v"}}), "spec.labels key"},
		{"spec/label_key_space", configure(fsm.Spec{Labels: map[string]string{"a b": "v"}}), "spec.labels key"},
		{"spec/label_value_too_long", configure(fsm.Spec{Labels: map[string]string{"team": long}}), "spec.labels[team]"},
		{"spec/labels_too_many", configure(fsm.Spec{Labels: many(fsm.MaxLabels + 1)}), "spec.labels has"},
		{"create/bad_spec", withSpec(command("ws-1", fsm.Create), fsm.Spec{CPUs: -2}), "spec.cpus"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cmd.Validate()
			var r *fsm.Rejection
			if !errors.As(err, &r) {
				t.Fatalf("Validate() = %v (%T), want a *Rejection", err, err)
			}
			if r.Code != fsm.CodeInvalid || r.Command != tc.cmd.Type || r.Allowed == nil {
				t.Fatalf("rejection %+v: want code invalid for %q with an allowed list", *r, tc.cmd.Type)
			}
			if !strings.Contains(r.Message, tc.says) {
				t.Fatalf("message %q does not say %q", r.Message, tc.says)
			}
			// Decide refuses it the same way, in any state, without an event.
			for _, st := range fsm.Statuses() {
				w := mustReach(t, st).w
				d := fsm.Decide(w, tc.cmd)
				if d.Outcome != fsm.Rejected || d.Event != nil || d.Rejection == nil ||
					d.Rejection.Code != fsm.CodeInvalid || d.Rejection.Message != r.Message || d.Rejection.State != st {
					t.Fatalf("Decide in %s: %+v, rejection %+v", st, d, d.Rejection)
				}
			}
		})
	}
}

func TestValidateAccepts(t *testing.T) {
	cases := []fsm.Command{
		command("a", fsm.Create),
		command("0", fsm.Start),
		command("a-b", fsm.Stop),
		command(strings.Repeat("a", fsm.MaxIDLen), fsm.Restart),
		command("ws-1", fsm.Delete),
		withSpec(command("ws-1", fsm.Create), specA),
		withSpec(command("ws-1", fsm.Configure), fsm.Spec{}),
		withSpec(command("ws-1", fsm.Configure), fsm.Spec{CPUs: fsm.MinCPUs}),
		withSpec(command("ws-1", fsm.Configure), fsm.Spec{CPUs: fsm.MaxCPUs, MemoryBytes: fsm.MinMemoryBytes,
			Env: map[string]string{"_X1": ""}, Labels: map[string]string{"app.kubernetes.io/name": "x", "com.example.docker": "y"},
			Profile: "standard"}),
		func() fsm.Command {
			c := command("ws-1", fsm.Start)
			c.ID = strings.Repeat("Z", fsm.MaxCommandIDLen)
			return c
		}(),
		system("ws-1", fsm.ProvisionFailed, 9),
		func() fsm.Command { // reports use the reserved namespace
			c := system("ws-1", fsm.ProvisionSucceeded, 1)
			c.ID = "sys-provision-ws-1-g1"
			return c
		}(),
		func() fsm.Command { // "sys" alone, or elsewhere in the id, is not the prefix
			c := command("ws-1", fsm.Start)
			c.ID = "sysadmin-sys-1"
			return c
		}(),
		func() fsm.Command {
			c := system("ws-1", fsm.ContainerExited, 1)
			c.ExitCode, c.Reason = new(-1), "killed"
			return c
		}(),
	}
	for _, c := range cases {
		if err := c.Validate(); err != nil {
			t.Errorf("Validate(%s on %q) = %v, want nil", c.Type, c.Workspace, err)
		}
	}
}

// TestValidateReturnsRejection: Validate's result is a *Rejection by type,
// so Decide uses it without an assertion that a different error type would
// have made panic (issue 15 item 3). On a Validate that returns error this
// file does not compile.
func TestValidateReturnsRejection(t *testing.T) {
	var r *fsm.Rejection = fsm.Command{Type: "bogus", Workspace: "ws-1", ID: "c1"}.Validate()
	if r == nil || r.Code != fsm.CodeInvalid {
		t.Fatalf("Validate() = %v, want an invalid *Rejection", r)
	}
	var ok *fsm.Rejection = fsm.Command{Type: fsm.Start, Workspace: "ws-1", ID: "c1"}.Validate()
	if ok != nil {
		t.Fatalf("Validate() of a good command = %v, want nil", ok)
	}
}

// TestIsAPIActor: the API's actors and what reads as them, in any case,
// width, script or with invisible characters, are the API's; other actors
// are not.
func TestIsAPIActor(t *testing.T) {
	for _, tc := range []struct {
		actor string
		want  bool
	}{
		{"api:default", true}, {"API:ci", true}, {"api:", true},
		{" api:default", true}, {"\tapi:x", true}, {"api :x", true}, {"a p i:x", true},
		{"\u200bapi:x", true}, {"a\u200dpi:x", true}, {"\u00adapi:x", true}, {"\ufeffapi:x", true}, {"a\ufe0fpi:x", true},
		{"api\uff1ax", true}, {"\uff41\uff50\uff49:x", true}, {"\uff21\uff30\uff29\uff1ax", true}, {"api\ufe13x", true}, {"api\ufe55x", true},
		{"api\u2236x", true}, {"api\ua789x", true}, {"api\u02d0x", true}, {"api\u0589x", true},
		{"\u0430pi:x", true}, {"\u0410PI:x", true}, {"a\u0440i:x", true}, {"A\u0420I:x", true}, {"ap\u0456:x", true}, {"AP\u0406:x", true},
		{"ap\u0131:x", true}, {"a\u03c1i:x", true}, {"\u0391\u03a1\u0399:x", true}, {"\u0251pi:x", true},
		{"\U0001d41a\U0001d429\U0001d422:x", true}, {"\u24d0\u24df\u24d8:x", true}, {"a\u0323pi:x", true}, {"\u00e1pi:x", true},
		{"\u202etluafed:ipa", true}, {"bob\u2067", true},
		{"", false}, {"api", false}, {"apiary:bob", false}, {"cli:api:bob", false}, {"grapi:x", false},
		{"a.p.i:x", false}, {"ap1:x", false}, {"apl:x", false}, {"bob", false}, {"\u00e9quipe", false}, {"\u0444\u0438\u043b", false},
	} {
		if got := fsm.IsAPIActor(tc.actor); got != tc.want {
			t.Errorf("IsAPIActor(%q) = %v, want %v", tc.actor, got, tc.want)
		}
	}
}

// TestIsSystemActor: an actor that reads as one of Turnstile's own parts
// is one (in review, " worker" and "wоrker" with a Cyrillic о passed a
// NATS user's stop off as the worker's).
func TestIsSystemActor(t *testing.T) {
	for _, tc := range []struct {
		actor string
		want  bool
	}{
		{"worker", true}, {"Worker", true}, {" worker", true}, {"worker\u200b", true}, {"w\u043erker", true},
		{"\u0455upervisor", true}, {"RECONCILER", true}, {"\u0440rovisioner", true}, {"\uff57\uff41\uff54\uff43\uff48\uff45\uff52", true},
		{"", false}, {"workers", false}, {"co-worker", false}, {"cli:worker", false}, {"bob", false},
	} {
		if got := fsm.IsSystemActor(tc.actor); got != tc.want {
			t.Errorf("IsSystemActor(%q) = %v, want %v", tc.actor, got, tc.want)
		}
	}
}
