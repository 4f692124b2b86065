package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
	"go.uber.org/goleak"

	"github.com/turnstile-dev/turnstile/client"
	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/internal/testenv"
	"github.com/turnstile-dev/turnstile/provisioner"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// runCLI runs the CLI in this process and returns its exit code and output.
func runCLI(t *testing.T, env map[string]string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	code := run(ctx, args, streams{in: strings.NewReader(""), out: &out, err: &errb}, func(k string) string { return env[k] })
	return code, out.String(), errb.String()
}

func TestExitCodeTable(t *testing.T) {
	for _, tc := range []struct {
		code fsm.Code
		exit int
	}{
		{fsm.CodeNotFound, exitRejected},
		{fsm.CodeExists, exitRejected},
		{fsm.CodeBusy, exitRejected},
		{fsm.CodeGone, exitRejected},
		{fsm.CodeInvalid, exitUsage},
		{"", exitError},
	} {
		if got := exitCodeOf(tc.code); got != tc.exit {
			t.Errorf("exitCodeOf(%q) = %d, want %d", tc.code, got, tc.exit)
		}
	}
	for _, tc := range []struct {
		name    string
		err     error
		started bool
		exit    int
	}{
		{"Nil", nil, true, exitOK},
		{"ParseError", errors.New("unknown flag"), false, exitUsage},
		{"RuntimeError", errors.New("connection refused"), true, exitError},
		{"Coded", withCode(exitTimeout, errors.New("x")), true, exitTimeout},
		{"Rejection", fmt.Errorf("send: %w", &fsm.Rejection{Code: fsm.CodeBusy}), true, exitRejected},
		{"Invalid", fsm.Invalid(fsm.Create, "bad"), true, exitUsage},
		{"NoOutcome", fmt.Errorf("x: %w", client.ErrNoOutcome), true, exitTimeout},
		{"Deadline", context.DeadlineExceeded, true, exitTimeout},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := codeOf(tc.err, tc.started); got != tc.exit {
				t.Fatalf("codeOf(%v, %v) = %d, want %d", tc.err, tc.started, got, tc.exit)
			}
		})
	}
}

func TestEnvBinding(t *testing.T) {
	t.Run("VariableSetsFlag", func(t *testing.T) {
		code, out, errs := runCLI(t, map[string]string{"TURNSTILE_OUTPUT": "json"}, "version")
		if code != 0 || !strings.HasPrefix(out, "{") {
			t.Fatalf("exit %d, out %q, err %q", code, out, errs)
		}
	})
	t.Run("FlagWins", func(t *testing.T) {
		code, out, _ := runCLI(t, map[string]string{"TURNSTILE_OUTPUT": "json"}, "version", "-o", "table")
		if code != 0 || !strings.HasPrefix(out, "turnstile ") {
			t.Fatalf("exit %d, out %q", code, out)
		}
	})
	t.Run("BadValueNamesVariable", func(t *testing.T) {
		code, _, errs := runCLI(t, map[string]string{"TURNSTILE_SIM_MAX_LATENCY": "soon"}, "serve")
		if code != exitUsage || !strings.Contains(errs, "TURNSTILE_SIM_MAX_LATENCY") {
			t.Fatalf("exit %d, err %q", code, errs)
		}
	})
	// A value a check refuses (not one the flag cannot parse) is reported
	// under the variable that gave it, not under a flag nobody typed; a
	// variable that may hold a secret is named without its value.
	t.Run("CheckedValueNamesVariable", func(t *testing.T) {
		serveEnv := func(k, v string) map[string]string {
			return map[string]string{k: v, "TURNSTILE_DATA_DIR": t.TempDir(), "TURNSTILE_PROVISIONER": "sim",
				"TURNSTILE_NATS_LISTEN": fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t)),
				"TURNSTILE_HTTP_ADDR":   fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))}
		}
		for _, tc := range []struct {
			env        map[string]string
			args       []string
			want, flag string
		}{
			{map[string]string{"TURNSTILE_OUTPUT": "xml"}, []string{"list"}, `TURNSTILE_OUTPUT="xml"`, "--output"},
			{map[string]string{"TURNSTILE_API_URL": "notaurl", "TURNSTILE_API_TOKEN": strings.Repeat("t", 43)}, []string{"list"},
				`TURNSTILE_API_URL="notaurl"`, "--api-url"},
			{serveEnv("TURNSTILE_LOG_LEVEL", "loud"), []string{"serve"}, `TURNSTILE_LOG_LEVEL="loud"`, "--log-level"},
			{serveEnv("TURNSTILE_PROVISIONER", "k8s"), []string{"serve"}, `TURNSTILE_PROVISIONER="k8s"`, "--provisioner"},
			{serveEnv("TURNSTILE_REPLICAS", "2"), []string{"serve"}, `TURNSTILE_REPLICAS="2"`, "--replicas"},
			{serveEnv("TURNSTILE_NATS_SYNC", "sometimes"), []string{"serve"}, `TURNSTILE_NATS_SYNC="sometimes"`, "--nats-sync"},
			{serveEnv("TURNSTILE_DEFAULT_MEMORY", "lots"), []string{"serve"}, `TURNSTILE_DEFAULT_MEMORY="lots"`, "--default-memory"},
			{serveEnv("TURNSTILE_SHUTDOWN_TIMEOUT", "0s"), []string{"serve"}, `TURNSTILE_SHUTDOWN_TIMEOUT="0s"`, "--shutdown-timeout"},
			{serveEnv("TURNSTILE_SHUTDOWN_TIMEOUT", "0"), []string{"serve"}, `TURNSTILE_SHUTDOWN_TIMEOUT="0"`, "--shutdown-timeout"},
			{serveEnv("TURNSTILE_API_TOKEN", "short-secret"), []string{"serve"}, "TURNSTILE_API_TOKEN:", "--api-token"},
		} {
			code, _, errs := runCLI(t, tc.env, tc.args...)
			if code != exitUsage || !strings.Contains(errs, tc.want) || strings.Contains(errs, tc.flag+" ") || strings.Contains(errs, tc.flag+":") {
				t.Errorf("%v with %v: exit %d, stderr %q; want exit 2 naming %s, not %s", tc.args, tc.env, code, errs, tc.want, tc.flag)
			}
		}
		if _, _, errs := runCLI(t, serveEnv("TURNSTILE_API_TOKEN", "short-secret"), "serve"); strings.Contains(errs, "short-secret") {
			t.Errorf("serve with a bad TURNSTILE_API_TOKEN shows it: %q", errs)
		}
		// Given on the command line, the flag is named.
		code, _, errs := runCLI(t, serveEnv("TURNSTILE_PROVISIONER", "sim"), "serve", "--replicas", "2")
		if code != exitUsage || !strings.Contains(errs, "--replicas 2:") {
			t.Errorf("serve --replicas 2: exit %d, stderr %q; want the flag named", code, errs)
		}
	})
	t.Run("EveryServeFlagHasAVariable", func(t *testing.T) {
		a := &app{getenv: func(string) string { return "" }}
		root := a.rootCmd()
		serve, _, err := root.Find([]string{"serve"})
		if err != nil {
			t.Fatal(err)
		}
		serve.Flags().VisitAll(func(f *pflag.Flag) {
			if _, ok := f.Annotations[envAnnotation]; !ok && f.Name != "help" {
				t.Errorf("serve --%s has no TURNSTILE_ variable", f.Name)
			}
		})
		root.PersistentFlags().VisitAll(func(f *pflag.Flag) {
			if _, ok := f.Annotations[envAnnotation]; !ok {
				t.Errorf("--%s has no TURNSTILE_ variable", f.Name)
			}
		})
	})
}

func TestSpecFlags(t *testing.T) {
	parse := func(t *testing.T, args ...string) (fsm.Spec, error) {
		t.Helper()
		var s specFlags
		fs := pflag.NewFlagSet("x", pflag.ContinueOnError)
		s.register(fs, true)
		if err := fs.Parse(args); err != nil {
			t.Fatal(err)
		}
		return s.apply(fs, fsm.Spec{Image: "base:1", Env: map[string]string{"KEEP": "1"}})
	}
	t.Run("Merge", func(t *testing.T) {
		spec, err := parse(t, "--memory", "512m", "--cpus", "1.5", "--env", "A=1", "--env", "B=x=y", "--label", "team=core",
			"--profile", "standard")
		if err != nil {
			t.Fatal(err)
		}
		want := fsm.Spec{Image: "base:1", CPUs: 1.5, MemoryBytes: 512 << 20,
			Env: map[string]string{"KEEP": "1", "A": "1", "B": "x=y"}, Labels: map[string]string{"team": "core"}, Profile: "standard"}
		if !spec.Equal(want) {
			t.Fatalf("spec %+v, want %+v", spec, want)
		}
	})
	for _, tc := range []struct {
		name string
		args []string
		says string
	}{
		{"BadMemory", []string{"--memory", "lots"}, "--memory"},
		{"TinyMemory", []string{"--memory", "1k"}, "spec.memory_bytes"},
		{"EnvWithoutValue", []string{"--env", "NOPE"}, "--env"},
		{"ReservedLabel", []string{"--label", "turnstile.x=1"}, "spec.labels"},
		{"NegativeCPUs", []string{"--cpus", "-1"}, "spec.cpus"},
		{"DockerLabel", []string{"--label", "com.docker.compose.project=x"}, "spec.labels"},
		{"BadProfile", []string{"--profile", "Privileged!"}, "spec.profile"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := parse(t, tc.args...); err == nil || !strings.Contains(err.Error(), tc.says) {
				t.Fatalf("error %v does not name %s", err, tc.says)
			}
		})
	}
}

// TestServePolicyFlags: issue 12 item 7. serve's flags and variables make
// the provisioner policy: strict defaults (maximums too), 0 for "no limit", and a bad
// pattern, profile or size refused with the flag named.
func TestServePolicyFlags(t *testing.T) {
	t.Run("Defaults", func(t *testing.T) {
		p, err := servePolicy(t, nil)
		want := provisioner.Policy{DefaultProfile: "restricted", DefaultMemoryBytes: 512 << 20, DefaultCPUs: 1,
			MaxMemoryBytes: 4 << 30, MaxCPUs: float64(min(runtime.NumCPU(), fsm.MaxCPUs)), PidsLimit: 512, TmpBytes: 64 << 20}
		if err != nil || !reflect.DeepEqual(p, want) {
			t.Fatalf("policy %+v, %v; want %+v", p, err, want)
		}
	})
	t.Run("Given", func(t *testing.T) {
		p, err := servePolicy(t, map[string]string{"TURNSTILE_ALLOWED_IMAGES": "registry.example/team/*,alpine:3.*"},
			"--allowed-profiles", "restricted,standard", "--default-memory", "0", "--default-cpus", "0",
			"--pids-limit", "0", "--max-memory", "2g", "--max-cpus", "4")
		if err == nil {
			t.Fatalf("policy %+v: no limit by default yet a maximum must be refused", p)
		}
		p, err = servePolicy(t, map[string]string{"TURNSTILE_ALLOWED_IMAGES": "registry.example/team/*,alpine:3.*"},
			"--allowed-profiles", "restricted,standard", "--default-memory", "1g", "--pids-limit", "0", "--max-memory", "2g", "--max-cpus", "4")
		want := provisioner.Policy{AllowedImages: []string{"registry.example/team/*", "alpine:3.*"},
			AllowedProfiles: []string{"restricted", "standard"}, DefaultProfile: "restricted", DefaultMemoryBytes: 1 << 30,
			DefaultCPUs: 1, MaxMemoryBytes: 2 << 30, MaxCPUs: 4, PidsLimit: -1, TmpBytes: 64 << 20}
		if err != nil || !reflect.DeepEqual(p, want) {
			t.Fatalf("policy %+v, %v; want %+v", p, err, want)
		}
	})
	for _, tc := range []struct {
		name string
		args []string
		says string
	}{
		{"BadPattern", []string{"--allowed-images", "registry/[a"}, "--allowed-images"},
		{"UnknownProfile", []string{"--allowed-profiles", "privileged"}, `"privileged" does not exist`},
		{"DefaultNotAllowed", []string{"--default-profile", "standard", "--allowed-profiles", "restricted"}, "not among the allowed"},
		{"BadSize", []string{"--default-memory", "lots"}, "--default-memory"},
		{"NegativeCPUs", []string{"--default-cpus", "-1"}, "--default-cpus"},
		{"DefaultAboveMax", []string{"--max-memory", "256m"}, "--default-memory 512m is above --max-memory 256m"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := servePolicy(t, nil, tc.args...); err == nil || !strings.Contains(err.Error(), tc.says) {
				t.Fatalf("error %v does not say %s", err, tc.says)
			}
		})
	}
}

// TestShutdownTimeoutMustBePositive: a --shutdown-timeout of 0 or less
// would stop everything with an expired context (PostgreSQL killed at
// once): serve refuses it before it starts anything.
func TestShutdownTimeoutMustBePositive(t *testing.T) {
	for _, v := range []string{"0", "-5s"} {
		env := map[string]string{"TURNSTILE_DATA_DIR": t.TempDir(), "TURNSTILE_PROVISIONER": "sim",
			"TURNSTILE_NATS_LISTEN": fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t)),
			"TURNSTILE_HTTP_ADDR":   fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))}
		code, _, errs := runCLI(t, env, "serve", "--shutdown-timeout", v)
		if code != exitUsage || !strings.Contains(errs, "--shutdown-timeout") || !strings.Contains(errs, "positive") {
			t.Errorf("--shutdown-timeout %s: exit %d, stderr %q; want a usage error", v, code, errs)
		}
	}
}

// TestLifecycleInProcess drives the CLI against a real core (NATS, streams,
// engine), with the test standing in for the provisioner.
func TestLifecycleInProcess(t *testing.T) {
	core := testenv.StartCore(t, testenv.CoreOptions{})
	env := map[string]string{"TURNSTILE_NATS_URL": core.NATS.URL}

	code, out, errs := runCLI(t, env, "create", "inproc", "--command-id", "c-1")
	if code != 0 || !strings.Contains(out, "accepted; provisioning at generation 1") {
		t.Fatalf("create: exit %d\n%s%s", code, out, errs)
	}
	code, out, _ = runCLI(t, env, "create", "inproc", "--command-id", "c-1")
	if code != 0 || !strings.Contains(out, "command c-1") {
		t.Fatalf("the same command id again: exit %d\n%s", code, out)
	}
	code, _, errs = runCLI(t, env, "restart", "inproc")
	if code != exitRejected || !strings.Contains(errs, "refused (busy)") {
		t.Fatalf("restart while provisioning: exit %d\n%s", code, errs)
	}
	code, _, errs = runCLI(t, env, "start", "ghost")
	if code != exitRejected || !strings.Contains(errs, "refused (not_found)") {
		t.Fatalf("start of nothing: exit %d\n%s", code, errs)
	}
	code, _, errs = runCLI(t, env, "wait", "inproc", "--state", "running", "--timeout", "200ms")
	if code != exitTimeout || !strings.Contains(errs, "it is provisioning at generation 1") {
		t.Fatalf("wait before the outcome: exit %d\n%s", code, errs)
	}
	sys := core.SystemClient(t, "test-provisioner")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if o, err := sys.Send(ctx, fsm.Command{Type: fsm.ProvisionSucceeded, Workspace: "inproc", Generation: 1}); err != nil || o.Outcome != fsm.Accepted {
		t.Fatal(o, err)
	}
	code, out, errs = runCLI(t, env, "wait", "inproc", "--state", "running", "--timeout", "10s")
	if code != 0 || !strings.Contains(out, "inproc is running at generation 1") {
		t.Fatalf("wait: exit %d\n%s%s", code, out, errs)
	}
	code, out, errs = runCLI(t, env, "configure", "inproc", "--image", "next:2", "-o", "json")
	if code != 0 || !strings.Contains(out, `"state": "provisioning"`) || !strings.Contains(out, `"generation": 2`) {
		t.Fatalf("configure: exit %d\n%s%s", code, out, errs)
	}
	code, out, errs = runCLI(t, env, "history", "inproc")
	if code != 0 || strings.Count(out, "workspace.") != 3 || !strings.Contains(out, "running → provisioning") {
		t.Fatalf("history: exit %d\n%s%s", code, out, errs)
	}
	code, out, errs = runCLI(t, env, "audit", "inproc", "--at", "2")
	if code != 0 || !strings.Contains(out, "OK: 3 event(s)") || !strings.Contains(out, "running at generation 1") {
		t.Fatalf("audit --at 2: exit %d\n%s%s", code, out, errs)
	}
	code, out, errs = runCLI(t, env, "audit", "--all", "-o", "json")
	if code != 0 || !strings.Contains(out, `"ok": true`) {
		t.Fatalf("audit --all: exit %d\n%s%s", code, out, errs)
	}
}

// TestNameVariable: the forms a check's message names a flag in become
// the variable; a longer flag and advice ("pass --nats-url") stay.
func TestNameVariable(t *testing.T) {
	for _, tc := range []struct {
		msg, flag string
		s         envSetting
		want      string
	}{
		{`--output "xml": use table`, "output", envSetting{"TURNSTILE_OUTPUT", "xml", "xml"}, `TURNSTILE_OUTPUT="xml": use table`},
		{`--replicas 2: use 1, 3 or 5`, "replicas", envSetting{"TURNSTILE_REPLICAS", "2", "2"}, `TURNSTILE_REPLICAS="2": use 1, 3 or 5`},
		{`--replicas 25: no`, "replicas", envSetting{"TURNSTILE_REPLICAS", "2", "2"}, `--replicas 25: no`},
		{`--tls-cert "a" and --tls-key "": give both`, "tls-cert", envSetting{"TURNSTILE_TLS_CERT", "a", "a"}, `TURNSTILE_TLS_CERT="a" and --tls-key "": give both`},
		{`--api-token-file: mode 0644`, "api-token", envSetting{"TURNSTILE_API_TOKEN", "s", "[s]"}, `--api-token-file: mode 0644`},
		{`--api-token: too short`, "api-token", envSetting{"TURNSTILE_API_TOKEN", "s", "[s]"}, `TURNSTILE_API_TOKEN: too short`},
		{`give --api-url (without --nats-url and --database-url)`, "nats-url", envSetting{"TURNSTILE_NATS_URL", "nats://h:1", "nats://h:1"},
			`give --api-url (without --nats-url and --database-url)`},
	} {
		if got := nameVariable(tc.msg, tc.flag, tc.s); got != tc.want {
			t.Errorf("nameVariable(%q, %s) = %q, want %q", tc.msg, tc.flag, got, tc.want)
		}
	}
}
