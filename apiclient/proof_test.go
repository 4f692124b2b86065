package apiclient_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/turnstile-dev/turnstile/api"
	"github.com/turnstile-dev/turnstile/apiclient"
	"github.com/turnstile-dev/turnstile/fsm"
)

// connLog wraps a handler and records, per client connection (its remote
// address), whether it was proven before it carried a token.
type connLog struct {
	mu       sync.Mutex
	proven   map[string]bool
	proofs   int
	unproven []string // requests with a token on a connection not proven first
	tokens   []string // every Authorization header seen
}

func (l *connLog) wrap(next http.Handler) http.Handler {
	l.proven = map[string]bool{}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		l.mu.Lock()
		if r.URL.Path == api.ProofPath {
			l.proofs++
			l.proven[r.RemoteAddr] = true
		} else if a := r.Header.Get("Authorization"); a != "" {
			l.tokens = append(l.tokens, a)
			if !l.proven[r.RemoteAddr] {
				l.unproven = append(l.unproven, r.Method+" "+r.URL.Path)
			}
		}
		l.mu.Unlock()
		next.ServeHTTP(w, r)
	})
}

func (l *connLog) seen() (proofs int, unproven, tokens []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.proofs, append([]string(nil), l.unproven...), append([]string(nil), l.tokens...)
}

// TestProveServer: with ProveServer, the token goes only on connections
// whose server proved first that it holds it (a real API server, also
// after its connections were cut); a server that cannot prove it (a fake
// listener, one with another token, or the real one asked with a wrong
// token) gets no token and the call fails with a *ProofError.
func TestProveServer(t *testing.T) {
	st := newStack(t)
	ctx := ctxT(t)

	t.Run("RealServer", func(t *testing.T) {
		var log connLog
		srv := httptest.NewServer(log.wrap(st.srv.Config.Handler))
		defer srv.Close()
		c, err := apiclient.New(srv.URL, token, nil, apiclient.ProveServer())
		if err != nil {
			t.Fatal(err)
		}
		if res, err := c.Send(ctx, fsm.Command{Type: fsm.Create, Workspace: "proven"}); err != nil || res.Outcome != fsm.Accepted {
			t.Fatalf("create: %+v %v", res, err)
		}
		if _, err := c.History(ctx, "proven"); err != nil {
			t.Fatal(err)
		}
		// A new connection, as after serve restarted: proven again.
		srv.CloseClientConnections()
		if _, err := c.History(ctx, "proven"); err != nil {
			t.Fatal(err)
		}
		proofs, unproven, tokens := log.seen()
		if len(unproven) > 0 || len(tokens) < 3 || proofs < 2 {
			t.Fatalf("%d proofs, %d requests with the token, unproven connections carried %v", proofs, len(tokens), unproven)
		}
	})

	impostors := map[string]http.HandlerFunc{
		// Answers everything, as the reviewer's fake listener did.
		"AnswersAll": func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"proofs":["x"],"id":"proven","status":"running"}`))
		},
		"NoProofRoute": func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == api.ProofPath {
				http.NotFound(w, r)
			}
		},
		// A serve of other tokens: its proofs are real, of the wrong secret.
		"OtherToken": func(w http.ResponseWriter, r *http.Request) {
			nonce := r.URL.Query().Get("nonce")
			_ = json.NewEncoder(w).Encode(api.ProofAnswer{Proofs: []string{api.TokenProof(strings.Repeat("o", 40), nonce)}})
		},
	}
	for name, h := range impostors {
		t.Run(name, func(t *testing.T) {
			var log connLog
			srv := httptest.NewServer(log.wrap(h))
			defer srv.Close()
			c, err := apiclient.New(srv.URL, token, nil, apiclient.ProveServer())
			if err != nil {
				t.Fatal(err)
			}
			_, err = c.Get(ctx, "proven")
			var pe *apiclient.ProofError
			if !errors.As(err, &pe) || pe.URL != srv.URL || !strings.Contains(err.Error(), "not sent") {
				t.Fatalf("get from an impostor: %v, want a ProofError", err)
			}
			err = c.FollowAll(ctx, 0, apiclient.FollowOptions{}, func(api.Event) error { return nil })
			if !errors.As(err, &pe) {
				t.Fatalf("follow from an impostor: %v, want a ProofError, not a retry", err)
			}
			if _, _, tokens := log.seen(); len(tokens) > 0 {
				t.Fatalf("the impostor got %q", tokens)
			}
		})
	}

	t.Run("WrongTokenIsRefusedBeforeItIsSent", func(t *testing.T) {
		var log connLog
		srv := httptest.NewServer(log.wrap(st.srv.Config.Handler))
		defer srv.Close()
		c, err := apiclient.New(srv.URL, strings.Repeat("x", 40), nil, apiclient.ProveServer())
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.Get(ctx, "proven")
		var pe *apiclient.ProofError
		if !errors.As(err, &pe) {
			t.Fatalf("a wrong token: %v, want a ProofError", err)
		}
		if _, _, tokens := log.seen(); len(tokens) > 0 {
			t.Fatalf("the wrong token was sent: %q", tokens)
		}
	})
}
