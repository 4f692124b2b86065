package main

import (
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/turnstile-dev/turnstile/api"
)

// recorder keeps everything a fake listener received, as text.
type recorder struct {
	mu  sync.Mutex
	got []string
}

func (r *recorder) add(s string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, s)
}

func (r *recorder) all() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.got, "\n")
}

// A stale api-url (serve stopped; kept in the data dir) or the default
// port may be held by another local user. The CLI must not send them the
// API token: over HTTP it asks the listener to prove it holds the token
// first. With the real serve the HTTP path works.
func TestCredentialsNotSentToAnImpostor(t *testing.T) {
	secret, err := api.NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	// A data dir as serve leaves it, its URL files naming the impostors.
	dataDir := func(t *testing.T, files map[string]string) string {
		dir := t.TempDir()
		for name, v := range files {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(v+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		return dir
	}

	t.Run("HTTP", func(t *testing.T) {
		var rec recorder
		fake := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			dump, _ := httputil.DumpRequest(r, true)
			rec.add(string(dump))
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"proofs":["x"],"id":"web","status":"running","webhooks":[]}`))
		}))
		defer fake.Close()
		dir := dataDir(t, map[string]string{apiURLFile: fake.URL, apiTokenFile: secret})
		for _, args := range [][]string{{"get", "web"}, {"list"}, {"webhook", "list"}, {"history", "web", "--follow"}} {
			code, out, errs := runCLI(t, map[string]string{"TURNSTILE_DATA_DIR": dir}, args...)
			if code != exitError || !strings.Contains(errs, "did not prove") || !strings.Contains(errs, fake.URL) {
				t.Errorf("turnstile %s against a fake API: exit %d, stdout %q, stderr %q; want exit 1 and why the token was not sent",
					strings.Join(args, " "), code, out, errs)
			}
		}
		// The token named by environment, not the data dir, is held back too.
		env := map[string]string{"TURNSTILE_DATA_DIR": t.TempDir(), "TURNSTILE_API_URL": fake.URL, "TURNSTILE_API_TOKEN": "ci:" + secret}
		if code, _, errs := runCLI(t, env, "get", "web"); code != exitError || !strings.Contains(errs, "did not prove") {
			t.Errorf("get with TURNSTILE_API_TOKEN against a fake API: exit %d, stderr %q", code, errs)
		}
		if got := rec.all(); strings.Contains(got, secret) {
			t.Fatalf("the fake API received the API token:\n%s", got)
		}
	})

	t.Run("RealServe", func(t *testing.T) {
		s := startInProcessServe(t, nil)
		// The HTTP path, as the README's tour takes it: the data dir only.
		env := map[string]string{"TURNSTILE_DATA_DIR": s.dir}
		for _, args := range [][]string{{"create", "web", "--wait"}, {"get", "web"}, {"webhook", "list"}} {
			if code, out, errs := runCLI(t, env, args...); code != 0 {
				t.Fatalf("turnstile %s over HTTP: exit %d\n%s%s", strings.Join(args, " "), code, out, errs)
			}
		}
	})
}
