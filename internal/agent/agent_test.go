package agent_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/turnstile-dev/turnstile/internal/agent"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// start runs the agent on a loopback port and returns its address and the
// channel Run's result arrives on.
func start(t *testing.T, ctx context.Context, cfg agent.Config) (string, <-chan error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Listener = ln
	done := make(chan error, 1)
	go func() { done <- agent.Run(ctx, cfg) }()
	return ln.Addr().String(), done
}

func status(t *testing.T, addr string) int {
	t.Helper()
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 2 * time.Second}
	resp, err := client.Get("http://" + addr + "/healthz")
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

func waitResult(t *testing.T, done <-chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(5 * time.Second):
		t.Fatal("agent did not return within 5s")
		return nil
	}
}

func TestRun(t *testing.T) {
	t.Run("HealthyAfterStartDelay", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		began := time.Now()
		addr, done := start(t, ctx, agent.Config{StartDelay: 300 * time.Millisecond})
		if got := status(t, addr); got != http.StatusServiceUnavailable {
			t.Fatalf("before the start delay: status %d, want 503", got)
		}
		deadline := time.Now().Add(5 * time.Second)
		for status(t, addr) != http.StatusOK {
			if time.Now().After(deadline) {
				t.Fatal("never became healthy")
			}
			time.Sleep(20 * time.Millisecond) // polling interval, not synchronisation
		}
		if el := time.Since(began); el < 300*time.Millisecond {
			t.Fatalf("healthy after %v, before the 300ms start delay", el)
		}
		cancel()
		if err := waitResult(t, done); err != nil {
			t.Fatalf("Run after cancel: %v, want nil", err)
		}
	})
	t.Run("ExitAtOnce", func(t *testing.T) {
		zero := time.Duration(0)
		_, done := start(t, context.Background(), agent.Config{ExitAfter: &zero, ExitCode: 3})
		var exit *agent.ExitError
		if err := waitResult(t, done); !errors.As(err, &exit) || exit.Code != 3 {
			t.Fatalf("Run: %v, want exit code 3", err)
		}
	})
	t.Run("ExitAfter", func(t *testing.T) {
		d := 100 * time.Millisecond
		addr, done := start(t, context.Background(), agent.Config{ExitAfter: &d, ExitCode: 7})
		_ = status(t, addr)
		var exit *agent.ExitError
		if err := waitResult(t, done); !errors.As(err, &exit) || exit.Code != 7 {
			t.Fatalf("Run: %v, want exit code 7", err)
		}
	})
}

func TestConfigFromEnv(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	c, err := agent.ConfigFromEnv(env(nil))
	if err != nil || c.Addr != agent.DefaultAddr || c.StartDelay != 0 || c.ExitAfter != nil {
		t.Fatalf("defaults: %+v, %v", c, err)
	}
	c, err = agent.ConfigFromEnv(env(map[string]string{agent.EnvStartDelay: "2s", agent.EnvExitAfter: "0s", agent.EnvExitCode: "4"}))
	if err != nil || c.StartDelay != 2*time.Second || c.ExitAfter == nil || *c.ExitAfter != 0 || c.ExitCode != 4 {
		t.Fatalf("parsed: %+v, %v", c, err)
	}
	for _, bad := range []map[string]string{
		{agent.EnvStartDelay: "soon"}, {agent.EnvExitAfter: "-1s"}, {agent.EnvExitCode: "256"},
	} {
		if _, err := agent.ConfigFromEnv(env(bad)); err == nil {
			t.Errorf("%v: no error", bad)
		}
	}
}

func TestMainHealthcheck(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addr, done := start(t, ctx, agent.Config{})
	getenv := func(k string) string {
		if k == agent.EnvAddr {
			return addr
		}
		return ""
	}
	var stderr bytes.Buffer
	deadline := time.Now().Add(5 * time.Second)
	for agent.Main(ctx, []string{"healthcheck"}, getenv, &stderr) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("healthcheck never passed: %s", stderr.String())
		}
		time.Sleep(20 * time.Millisecond) // polling interval
	}
	cancel()
	if err := waitResult(t, done); err != nil {
		t.Fatal(err)
	}
	if code := agent.Main(context.Background(), []string{"healthcheck"}, getenv, &stderr); code != 1 {
		t.Fatalf("healthcheck of a stopped agent: exit %d, want 1", code)
	}
	if code := agent.Main(context.Background(), []string{"bogus"}, getenv, &stderr); code != 2 {
		t.Fatalf("unknown command: exit %d, want 2", code)
	}
}

func TestMainWritable(t *testing.T) {
	dir := t.TempDir()
	none := func(string) string { return "" }
	var stderr bytes.Buffer
	if code := agent.Main(context.Background(), []string{"writable", dir}, none, &stderr); code != 0 {
		t.Fatalf("writable %s: exit %d: %s", dir, code, stderr.String())
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("the probe left %v behind", entries)
	}
	missing := filepath.Join(dir, "missing")
	stderr.Reset()
	if code := agent.Main(context.Background(), []string{"writable", dir, missing}, none, &stderr); code != 1 ||
		!strings.Contains(stderr.String(), missing+" is not writable") {
		t.Fatalf("writable of a missing dir: exit %d: %s", code, stderr.String())
	}
}
