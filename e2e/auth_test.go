package e2e_test

import (
	"net/http"
	"path/filepath"
	"strings"
	"testing"
)

// TestAPIAuth: with --api-token, requests without the token (or with a
// wrong one) are refused with 401 and change nothing; with it they work.
func TestAPIAuth(t *testing.T) {
	const token = "e2e-secret-token-0123456789abcdefghijklmnop"
	srv := startServe(t, serveOptions{args: []string{"--provisioner", "sim"}, env: []string{"TURNSTILE_API_TOKEN=" + token}})
	for _, tc := range []struct{ name, token string }{{"NoToken", noToken}, {"WrongToken", "guess"}} {
		t.Run(tc.name, func(t *testing.T) {
			status, body := srv.httpDo(t, "POST", "/v1/workspaces", `{"id":"locked"}`, tc.token)
			if status != http.StatusUnauthorized || !strings.Contains(string(body), `"unauthorized"`) {
				t.Fatalf("create without the token: %d %s", status, body)
			}
			if status, _ := srv.httpDo(t, "GET", "/v1/workspaces", "", tc.token); status != http.StatusUnauthorized {
				t.Fatalf("list without the token: %d", status)
			}
		})
	}
	t.Run("HealthChecksAreOpen", func(t *testing.T) {
		if status, body := srv.httpDo(t, "GET", "/readyz", "", noToken); status != http.StatusOK || !strings.Contains(string(body), `"provisioner": "sim"`) {
			t.Fatalf("readyz: %d %s", status, body)
		}
	})
	t.Run("WithToken", func(t *testing.T) {
		if status, body := srv.httpDo(t, "POST", "/v1/workspaces", `{"id":"locked"}`, token); status != http.StatusAccepted {
			t.Fatalf("create with the token: %d %s", status, body)
		}
		status, body := srv.httpDo(t, "GET", "/v1/workspaces/locked/events", "", token)
		if status != http.StatusOK || strings.Count(string(body), `"command_id"`) != 1 {
			t.Fatalf("one event expected: %d %s", status, body)
		}
	})
}

// TestNATSAuth: with TURNSTILE_NATS_TOKEN, serve's embedded NATS refuses
// clients without the token or the data dir's nkey, so nothing can be
// published around it; the CLI with the same variable works, and so does
// the CLI in serve's directory, which signs in with the nkey serve wrote
// there. Without a token the embedded NATS refuses to listen beyond
// loopback (TestServeRefusesToStart).
func TestNATSAuth(t *testing.T) {
	const token = "e2e-nats-token"
	srv := startServe(t, serveOptions{args: []string{"--provisioner", "sim"}, env: []string{"TURNSTILE_NATS_TOKEN=" + token}})
	t.Run("NoToken", func(t *testing.T) {
		r := runIn(t, t.TempDir(), srv.clientEnv(), filepath.Join(binDir, "turnstile"), "create", "locked-out")
		want(t, r, 1, "create without the NATS token, away from the data dir")
		if !strings.Contains(strings.ToLower(r.stderr), "authorization") {
			t.Fatalf("stderr does not say why: %s", r)
		}
	})
	t.Run("DataDirNkey", func(t *testing.T) {
		want(t, srv.turnstile(t, "create", "by-nkey"), 0, "create in serve's directory, with its nkey")
	})
	t.Run("WithToken", func(t *testing.T) {
		r := runIn(t, srv.dir, append(srv.clientEnv(), "TURNSTILE_NATS_TOKEN="+token),
			filepath.Join(binDir, "turnstile"), "create", "let-in")
		want(t, r, 0, "create with the NATS token")
		r = runIn(t, srv.dir, append(srv.clientEnv(), "TURNSTILE_NATS_TOKEN="+token),
			filepath.Join(binDir, "turnstile"), "history", "locked-out")
		want(t, r, 3, "the refused create left no history")
	})
}
