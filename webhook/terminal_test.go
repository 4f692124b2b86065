package webhook_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/internal/termsafe"
	"github.com/turnstile-dev/turnstile/internal/testenv"
	"github.com/turnstile-dev/turnstile/webhook"
)

// TestDeliveryBodyInertOnATerminal: a label value with C1 CSI (U+009B) and
// a bidi override reaches a receiver as \u escapes, the same value to its
// JSON decoder and still signed; before, the body carried them raw, to
// act on the terminal of a receiver that logs what it gets.
func TestDeliveryBodyInertOnATerminal(t *testing.T) {
	const note = "\u009b2J\u009bH \u202egninnur\u202c"
	f := newFixture(t)
	var mu sync.Mutex
	var bodies [][]byte
	var sigs []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		bodies = append(bodies, b)
		sigs = append(sigs, r.Header.Get(webhook.HeaderSignature))
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(srv.Close)
	h, err := f.reg.Add(t.Context(), webhook.Spec{URL: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	f.dispatcher(t, nil)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	o, err := f.cl.Send(ctx, fsm.Command{Type: fsm.Create, Workspace: "tty", Spec: &fsm.Spec{Labels: map[string]string{"note": note}}})
	if err != nil || o.Outcome != fsm.Accepted {
		t.Fatalf("create: %+v %v", o, err)
	}
	var body []byte
	var sig string
	testenv.Eventually(t, 30*time.Second, "the delivery", func() bool {
		mu.Lock()
		defer mu.Unlock()
		if len(bodies) > 0 {
			body, sig = bodies[0], sigs[0]
		}
		return body != nil
	})
	if err := webhook.Verify(h.Secret, sig, body, 5*time.Minute, time.Now()); err != nil {
		t.Errorf("the delivery's signature: %v", err)
	}
	if i := bytes.IndexFunc(body, termsafe.Unsafe); i >= 0 {
		t.Errorf("the body holds a raw %q: %q", []rune(string(body[i:]))[0], body)
	}
	var d any
	if err := json.Unmarshal(body, &d); err != nil || !holds(d, note) {
		t.Errorf("the body does not carry the label as it was (%v): %q", err, body)
	}
}

// holds reports whether a decoded JSON value holds the string s anywhere.
func holds(v any, s string) bool {
	switch v := v.(type) {
	case string:
		return v == s
	case []any:
		for _, e := range v {
			if holds(e, s) {
				return true
			}
		}
	case map[string]any:
		for _, e := range v {
			if holds(e, s) {
				return true
			}
		}
	}
	return false
}
