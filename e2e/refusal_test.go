package e2e_test

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/turnstile-dev/turnstile/api"
	"github.com/turnstile-dev/turnstile/fsm"
)

// TestRestartDuringProvisioningRefused: with the simulator's provisioning
// taking 20s, a restart right after create is refused through the CLI (exit
// 3, the reason on stderr) and through HTTP (409 with the documented
// fields), and nothing is written for either.
func TestRestartDuringProvisioningRefused(t *testing.T) {
	srv := startServe(t, serveOptions{args: []string{"--provisioner", "sim", "--sim-min-latency", "20s", "--sim-max-latency", "20s"}})
	want(t, srv.turnstile(t, "create", "slow"), 0, "create slow")

	t.Run("CLI", func(t *testing.T) {
		r := srv.turnstile(t, "restart", "slow")
		want(t, r, 3, "restart during provisioning")
		for _, s := range []string{"restart slow refused (busy)", "provisioning (generation 1)", "allowed now: stop, delete, configure"} {
			if !strings.Contains(r.stderr, s) {
				t.Fatalf("stderr lacks %q:\n%s", s, r)
			}
		}
		if r.stdout != "" {
			t.Fatalf("a refusal printed on stdout in table mode:\n%s", r)
		}
	})

	t.Run("CLIJSON", func(t *testing.T) {
		r := srv.turnstile(t, "restart", "slow", "-o", "json")
		want(t, r, 3, "restart -o json during provisioning")
		var res api.CommandResult
		if err := json.Unmarshal([]byte(r.stdout), &res); err != nil {
			t.Fatalf("stdout is not JSON: %v\n%s", err, r)
		}
		if res.Outcome != fsm.Rejected || res.Rejection == nil || res.Rejection.Code != fsm.CodeBusy ||
			res.Rejection.State != fsm.Provisioning || res.Rejection.Generation != 1 {
			t.Fatalf("JSON outcome: %+v", res)
		}
		if !strings.Contains(r.stderr, "refused (busy)") {
			t.Fatalf("the reason is not on stderr:\n%s", r)
		}
	})

	t.Run("HTTP", func(t *testing.T) {
		status, body := srv.httpDo(t, "POST", "/v1/workspaces/slow/restart", "", "")
		if status != http.StatusConflict {
			t.Fatalf("status %d, want 409: %s", status, body)
		}
		var b api.ErrorBody
		if err := json.Unmarshal(body, &b); err != nil {
			t.Fatal(err)
		}
		if b.Code != "busy" || b.State != "provisioning" || b.Generation == nil || *b.Generation != 1 || b.Message == "" ||
			!slices.Equal(b.Allowed, []fsm.CommandType{fsm.Stop, fsm.Delete, fsm.Configure}) {
			t.Fatalf("409 body lacks the documented fields: %s", body)
		}
		if api.CodeOf(status, b) != fsm.CodeBusy {
			t.Fatalf("CodeOf(%d) = %q", status, api.CodeOf(status, b))
		}
	})

	t.Run("NothingWritten", func(t *testing.T) {
		r := srv.turnstile(t, "history", "slow", "-o", "json")
		want(t, r, 0, "history")
		var h struct{ Events []api.Event }
		if err := json.Unmarshal([]byte(r.stdout), &h); err != nil {
			t.Fatal(err)
		}
		if len(h.Events) != 1 || h.Events[0].Type != fsm.Created {
			t.Fatalf("refusals wrote events: %+v", h.Events)
		}
	})

	t.Run("StopIsAllowed", func(t *testing.T) {
		r := srv.turnstile(t, "stop", "slow", "--wait")
		want(t, r, 0, "stop during provisioning")
		if !strings.Contains(r.stdout, "slow is stopped at generation 2") {
			t.Fatalf("stop --wait:\n%s", r)
		}
	})
}
