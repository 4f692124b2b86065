package e2e_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

// TestAdmin: migrate, rebuild, get and list on the read model, metrics and
// version, against a running serve.
func TestAdmin(t *testing.T) {
	srv := startServe(t, serveOptions{args: []string{"--provisioner", "sim", "--sim-max-latency", "100ms"}})
	want(t, srv.turnstile(t, "create", "adm", "--wait"), 0, "create adm --wait")
	want(t, srv.turnstile(t, "create", "adm2"), 0, "create adm2")
	want(t, srv.turnstile(t, "stop", "adm2", "--wait"), 0, "stop adm2 --wait")

	t.Run("Migrate", func(t *testing.T) {
		r := srv.turnstile(t, "migrate", "status")
		want(t, r, 0, "migrate status")
		if !strings.Contains(r.stdout, "00001_read_model.sql") || strings.Contains(r.stdout, "pending") {
			t.Fatalf("migrate status:\n%s", r)
		}
		want(t, srv.turnstile(t, "migrate", "up"), 0, "migrate up (nothing to do)")
		want(t, srv.turnstile(t, "migrate"), 2, "migrate without up or status")
	})

	t.Run("Rebuild", func(t *testing.T) {
		r := srv.turnstile(t, "rebuild")
		want(t, r, 0, "rebuild")
		if !strings.Contains(r.stdout, "rebuilt the read model through stream seq") || !strings.Contains(r.stdout, "2 workspace(s)") {
			t.Fatalf("rebuild:\n%s", r)
		}
	})

	t.Run("GetAndList", func(t *testing.T) {
		r := srv.turnstile(t, "get", "adm", "-o", "json")
		want(t, r, 0, "get adm")
		var w struct {
			Status     string
			Generation uint64
			EventSeq   uint64 `json:"event_seq"`
			Source     string
		}
		if err := json.Unmarshal([]byte(r.stdout), &w); err != nil {
			t.Fatal(err)
		}
		if w.Status != "running" || w.Generation != 1 || w.EventSeq != 2 || w.Source != "read_model" {
			t.Fatalf("get adm: %+v", w)
		}
		r = srv.turnstile(t, "list", "--status", "stopped")
		want(t, r, 0, "list --status stopped")
		if !strings.Contains(r.stdout, "adm2") || strings.Contains(r.stdout, "adm ") || !strings.Contains(r.stdout, "from the read model at stream seq") {
			t.Fatalf("list --status stopped:\n%s", r)
		}
		want(t, srv.turnstile(t, "get", "nobody"), 3, "get of an unknown workspace")
	})

	t.Run("Metrics", func(t *testing.T) {
		status, body := srv.httpDo(t, "GET", "/metrics", "", "")
		if status != http.StatusOK {
			t.Fatalf("metrics: %d", status)
		}
		for _, m := range []string{`turnstile_commands_total{outcome="accepted",type="create"}`, "turnstile_command_latency_seconds",
			`turnstile_workspaces{state="running"} 1`, `turnstile_workspaces{state="stopped"} 1`, "turnstile_projector_lag_messages",
			"turnstile_action_duration_seconds", "go_goroutines"} {
			if !strings.Contains(string(body), m) {
				t.Errorf("metrics lack %s", m)
			}
		}
	})

	t.Run("Version", func(t *testing.T) {
		r := srv.turnstile(t, "version", "-o", "json")
		want(t, r, 0, "version")
		if !strings.Contains(r.stdout, `"go": "go1.`) {
			t.Fatalf("version:\n%s", r)
		}
	})
}
