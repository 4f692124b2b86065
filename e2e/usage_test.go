package e2e_test

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/turnstile-dev/turnstile/internal/testenv"
)

// TestUsage: exit code 2 for bad command lines and bad input, before
// anything is contacted; 1 for a missing server.
func TestUsage(t *testing.T) {
	dir := testenv.WorkDir(t, "turnstile-e2e-")
	for _, tc := range []struct {
		args []string
		code int
		says string
	}{
		{[]string{"create"}, 2, "want 1 argument(s) (ID)"},
		{[]string{"create", "Bad.Id"}, 2, "not a DNS label"},
		{[]string{"create", "ok", "--memory", "lots"}, 2, "--memory"},
		{[]string{"create", "ok", "--env", "NOEQUALS"}, 2, "KEY=VALUE"},
		{[]string{"create", "ok", "--command-id", "has space"}, 2, "--command-id"},
		{[]string{"configure", "ok"}, 2, "configure needs"},
		{[]string{"bogus"}, 2, "unknown command"},
		{[]string{"list", "--bogus"}, 2, "unknown flag"},
		{[]string{"list", "--status", "sleeping"}, 2, "--status"},
		{[]string{"audit"}, 2, "give a workspace ID, or --all"},
		{[]string{"audit", "x", "--all"}, 2, "not both"},
		{[]string{"-o", "xml", "version"}, 2, "--output"},
		{[]string{"serve", "--provisioner", "kubernetes"}, 2, "--provisioner"},
		{[]string{"serve", "--nats-sync", "sometimes"}, 2, "--nats-sync"},
		{[]string{"get", "demo"}, 1, "no database URL"},
		{[]string{"history", "demo", "--nats-url", fmt.Sprintf("nats://127.0.0.1:%d", testenv.FreePort(t))}, 1, "cannot reach NATS"},
	} {
		t.Run(strings.Join(tc.args, "_"), func(t *testing.T) {
			r := runIn(t, dir, nil, append([]string{binDir + "/turnstile"}, tc.args...)...)
			want(t, r, tc.code, strings.Join(tc.args, " "))
			if !strings.Contains(r.stderr, tc.says) {
				t.Fatalf("stderr lacks %q:\n%s", tc.says, r)
			}
		})
	}
	t.Run("EnvVariableIsUsed", func(t *testing.T) {
		r := runIn(t, dir, []string{"TURNSTILE_OUTPUT=xml"}, binDir+"/turnstile", "version")
		want(t, r, 2, "TURNSTILE_OUTPUT=xml")
		r = runIn(t, dir, []string{"TURNSTILE_OUTPUT=json"}, binDir+"/turnstile", "version")
		want(t, r, 0, "TURNSTILE_OUTPUT=json")
		if !strings.HasPrefix(r.stdout, "{") {
			t.Fatalf("TURNSTILE_OUTPUT=json did not apply:\n%s", r)
		}
		r = runIn(t, dir, []string{"TURNSTILE_OUTPUT=xml"}, binDir+"/turnstile", "version", "-o", "table")
		want(t, r, 0, "the flag wins over the variable")
	})
	t.Run("Completion", func(t *testing.T) {
		r := runIn(t, dir, nil, binDir+"/turnstile", "completion", "bash")
		want(t, r, 0, "completion bash")
		if !strings.Contains(r.stdout, "turnstile") {
			t.Fatalf("completion script:\n%s", r)
		}
	})
}

// TestServeRefusesToStart: a taken port, an exposed NATS without a token and
// missing PostgreSQL binaries each stop serve with an error that says which
// and what to do.
func TestServeRefusesToStart(t *testing.T) {
	t.Run("NATSPortTaken", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		port := l.Addr().(*net.TCPAddr).Port
		s := startServe(t, serveOptions{args: []string{"--provisioner", "sim"}, natsPort: port, noWait: true})
		if code := s.waitExit(time.Minute); code != 1 {
			t.Fatalf("exit %d, want 1:\n%s", code, s.stderr)
		}
		for _, sub := range []string{fmt.Sprintf("NATS address 127.0.0.1:%d is taken", port), "--nats-listen", "TURNSTILE_NATS_LISTEN"} {
			if !strings.Contains(s.stderr.String(), sub) {
				t.Fatalf("stderr lacks %q:\n%s", sub, s.stderr)
			}
		}
	})
	t.Run("HTTPPortTaken", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		port := l.Addr().(*net.TCPAddr).Port
		s := startServe(t, serveOptions{args: []string{"--provisioner", "sim"}, httpPort: port, noWait: true})
		if code := s.waitExit(time.Minute); code != 1 {
			t.Fatalf("exit %d, want 1:\n%s", code, s.stderr)
		}
		if !strings.Contains(s.stderr.String(), "HTTP API address") || !strings.Contains(s.stderr.String(), "--http-addr") {
			t.Fatalf("stderr:\n%s", s.stderr)
		}
	})
	t.Run("NATSExposedWithoutToken", func(t *testing.T) {
		s := startServe(t, serveOptions{args: []string{"--provisioner", "sim"}, noWait: true,
			env: []string{fmt.Sprintf("TURNSTILE_NATS_LISTEN=0.0.0.0:%d", testenv.FreePort(t))}})
		if code := s.waitExit(time.Minute); code != 2 {
			t.Fatalf("exit %d, want 2:\n%s", code, s.stderr)
		}
		if !strings.Contains(s.stderr.String(), "embedded NATS would listen on 0.0.0.0") || !strings.Contains(s.stderr.String(), "--nats-token") {
			t.Fatalf("stderr:\n%s", s.stderr)
		}
	})
	t.Run("NoPostgreSQLBinaries", func(t *testing.T) {
		s := startServe(t, serveOptions{args: []string{"--provisioner", "sim", "--postgres-bin-dir", "/nonexistent/bin"}, noWait: true})
		if code := s.waitExit(time.Minute); code != 1 {
			t.Fatalf("exit %d, want 1:\n%s", code, s.stderr)
		}
		for _, sub := range []string{"PostgreSQL binaries not found in /nonexistent/bin", "apt-get install postgresql-15", "--database-url"} {
			if !strings.Contains(s.stderr.String(), sub) {
				t.Fatalf("stderr lacks %q:\n%s", sub, s.stderr)
			}
		}
	})
}
