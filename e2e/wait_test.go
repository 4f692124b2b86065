package e2e_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/turnstile-dev/turnstile/api"
)

// TestWait: --wait and `wait` through the CLI, /wait through HTTP, each
// reached and timed out.
func TestWait(t *testing.T) {
	srv := startServe(t, serveOptions{args: []string{"--provisioner", "sim", "--sim-max-latency", "200ms"}})

	t.Run("CLIReached", func(t *testing.T) {
		r := srv.turnstile(t, "create", "quick", "--wait", "--timeout", "60s")
		want(t, r, 0, "create --wait")
		if !strings.Contains(r.stdout, "quick is running at generation 1") {
			t.Fatalf("create --wait:\n%s", r)
		}
		r = srv.turnstile(t, "stop", "quick", "--wait", "-o", "json")
		want(t, r, 0, "stop --wait")
		var res api.CommandResult
		if err := json.Unmarshal([]byte(r.stdout), &res); err != nil {
			t.Fatal(err)
		}
		if res.Wait == nil || !res.Wait.Reached || res.Wait.State != "stopped" || res.Wait.Generation != 2 {
			t.Fatalf("stop --wait -o json: %+v", res)
		}
		want(t, srv.turnstile(t, "wait", "quick", "--state", "stopped", "--timeout", "10s"), 0, "wait for a state already reached")
	})

	t.Run("CLITimeout", func(t *testing.T) {
		r := srv.turnstile(t, "create", "sleepy", "--env", "AGENT_START_DELAY=10m", "--wait", "--timeout", "3s")
		want(t, r, 4, "create --wait with a 10m start and a 3s timeout")
		if !strings.Contains(r.stderr, "timed out after 3s waiting for sleepy to be running: it is provisioning at generation 1") {
			t.Fatalf("timeout message:\n%s", r)
		}
		r = srv.turnstile(t, "wait", "sleepy", "--state", "running", "--timeout", "500ms")
		want(t, r, 4, "wait --timeout 500ms")
	})

	t.Run("CLIFailed", func(t *testing.T) {
		r := srv.turnstile(t, "create", "crashy", "--env", "AGENT_EXIT_AFTER=0s", "--env", "AGENT_EXIT_CODE=3", "--wait", "--timeout", "60s")
		want(t, r, 1, "create --wait of an image that exits at once")
		if !strings.Contains(r.stderr, "crashy ended failed at generation 1 instead of running") {
			t.Fatalf("failure message:\n%s", r)
		}
	})

	t.Run("HTTPReached", func(t *testing.T) {
		status, body := srv.httpDo(t, "POST", "/v1/workspaces", `{"id":"webby"}`, "")
		if status != http.StatusAccepted {
			t.Fatalf("create: %d %s", status, body)
		}
		status, body = srv.httpDo(t, "GET", "/v1/workspaces/webby/wait?state=running&generation=1&timeout=60s", "", "")
		if status != http.StatusOK {
			t.Fatalf("wait: %d %s", status, body)
		}
		var w api.WaitResult
		if err := json.Unmarshal(body, &w); err != nil {
			t.Fatal(err)
		}
		if !w.Reached || w.State != "running" || w.Generation != 1 {
			t.Fatalf("wait: %+v", w)
		}
	})

	t.Run("HTTPTimeout", func(t *testing.T) {
		status, body := srv.httpDo(t, "GET", "/v1/workspaces/sleepy/wait?state=running&timeout=1", "", "")
		if status != http.StatusRequestTimeout {
			t.Fatalf("wait: %d %s", status, body)
		}
		var w api.WaitResult
		if err := json.Unmarshal(body, &w); err != nil {
			t.Fatal(err)
		}
		if w.Reached || w.State != "provisioning" {
			t.Fatalf("408 body: %+v", w)
		}
	})
}
