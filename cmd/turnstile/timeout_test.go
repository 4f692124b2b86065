package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/turnstile-dev/turnstile/api"
	"github.com/turnstile-dev/turnstile/internal/testenv"
)

// fakeAPI is an HTTP API that proves it holds token (so the CLI sends
// it) and answers everything else with h; it records each request's
// method, path and Idempotency-Key.
type fakeAPI struct {
	url, token string
	mu         sync.Mutex
	reqs       []string
	keys       []string
}

func newFakeAPI(t *testing.T, h http.HandlerFunc) *fakeAPI {
	t.Helper()
	tok, err := api.NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeAPI{token: tok}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == api.ProofPath {
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(api.ProofAnswer{Proofs: []string{api.TokenProof(tok, r.URL.Query().Get("nonce"))}})
			return
		}
		f.mu.Lock()
		f.reqs = append(f.reqs, r.Method+" "+r.URL.Path)
		f.keys = append(f.keys, r.Header.Get(api.IdempotencyHeader))
		f.mu.Unlock()
		h(w, r)
	}))
	t.Cleanup(srv.Close)
	f.url = srv.URL
	return f
}

// env points the CLI at the fake alone, from a data dir without serve's files.
func (f *fakeAPI) env(t *testing.T) map[string]string {
	return map[string]string{"TURNSTILE_API_URL": f.url, "TURNSTILE_API_TOKEN": f.token, "TURNSTILE_DATA_DIR": t.TempDir()}
}

func (f *fakeAPI) requests() (reqs, keys []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.reqs...), append([]string(nil), f.keys...)
}

// TestLifecycleTimeout: a lifecycle command whose --timeout passes before
// its outcome is known exits 4 with the command id to send it again with,
// the generated one too, never a bare "context deadline exceeded"; a
// --timeout that leaves no time at all is a usage error and sends nothing.
func TestLifecycleTimeout(t *testing.T) {
	t.Run("NotPositive", func(t *testing.T) {
		fake := newFakeAPI(t, func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusTeapot) })
		natsURL, accepted := silentNATS(t)
		direct := map[string]string{"TURNSTILE_NATS_URL": natsURL, "TURNSTILE_DATA_DIR": t.TempDir()}
		for _, v := range []string{"0", "0s", "-1s"} {
			for _, env := range []map[string]string{fake.env(t), direct} {
				code, _, errs := runCLI(t, env, "create", "ux-to", "--timeout", v)
				if code != exitUsage || !strings.Contains(errs, "--timeout") {
					t.Errorf("create --timeout %s: exit %d, stderr %q; want exit 2 naming --timeout", v, code, errs)
				}
			}
		}
		if reqs, _ := fake.requests(); len(reqs) > 0 {
			t.Errorf("the API got %v", reqs)
		}
		select {
		case <-accepted:
			t.Error("NATS was connected to")
		default:
		}
	})
	t.Run("HTTPNoAnswer", func(t *testing.T) {
		fake := newFakeAPI(t, func(_ http.ResponseWriter, r *http.Request) {
			// The answer never comes. (The server notices the client
			// leave only once the body has been read.)
			_, _ = io.Copy(io.Discard, r.Body)
			select {
			case <-r.Context().Done():
			case <-time.After(time.Minute):
			}
		})
		code, _, errs := runCLI(t, fake.env(t), "create", "ux-to", "--timeout", "200ms")
		_, keys := fake.requests()
		if len(keys) != 1 || keys[0] == "" {
			t.Fatalf("the API got keys %q, want one", keys)
		}
		if code != exitTimeout || !strings.Contains(errs, "run it again with --command-id "+keys[0]+" ") {
			t.Fatalf("exit %d, stderr %q; want exit 4 and --command-id %s", code, errs, keys[0])
		}
	})
	t.Run("HTTP504", func(t *testing.T) {
		fake := newFakeAPI(t, func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusGatewayTimeout)
			_, _ = w.Write([]byte(`{"code":"timeout","message":"no outcome yet"}`))
		})
		code, _, errs := runCLI(t, fake.env(t), "restart", "ux-to", "--command-id", "mine-1")
		if code != exitTimeout || !strings.Contains(errs, "is stored and will be handled; run it again with --command-id mine-1 ") {
			t.Fatalf("exit %d, stderr %q; want exit 4 and --command-id mine-1", code, errs)
		}
	})
	t.Run("DirectNothingSent", func(t *testing.T) {
		natsURL, _ := silentNATS(t)
		env := map[string]string{"TURNSTILE_NATS_URL": natsURL, "TURNSTILE_DATA_DIR": t.TempDir()}
		code, _, errs := runCLI(t, env, "create", "ux-to", "--timeout", "300ms")
		if code != exitTimeout || !strings.Contains(errs, "nothing was sent") {
			t.Fatalf("exit %d, stderr %q; want exit 4 and nothing sent", code, errs)
		}
	})
	t.Run("DirectNoOutcome", func(t *testing.T) {
		core := testenv.StartCore(t, testenv.CoreOptions{})
		for _, e := range core.Engines { // stored, never handled
			if err := e.Close(); err != nil {
				t.Fatal(err)
			}
		}
		code, _, errs := runCLI(t, map[string]string{"TURNSTILE_NATS_URL": core.NATS.URL}, "create", "ux-to", "--timeout", "1s")
		if code != exitTimeout || !strings.Contains(errs, "run it again with --command-id ") {
			t.Fatalf("exit %d, stderr %q; want exit 4 and the command id", code, errs)
		}
	})
}
