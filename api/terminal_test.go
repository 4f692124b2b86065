package api_test

import (
	"bufio"
	"bytes"
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/turnstile-dev/turnstile/api"
	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/internal/termsafe"
)

// containerText is what a container can make a failure's reason say: C1
// CSI (U+009B, ESC [ on terminals that take C1 controls) clearing the
// screen, DEL, and a bidi override that shows "gninnur" as "running".
// encoding/json escapes C0 (ESC, newlines) but writes these as they are.
const containerText = "health check: \u009b2J\u009bH\x7f \u202egninnur\u202c"

// TestJSONAnswersInertOnATerminal: a failure's reason from a container
// reaches `curl …/events` and the follow stream escaped (\u009b,
// \u202e), the same value to a JSON decoder. Before, the C1 and bidi
// characters came out raw, to act on the terminal of whoever read the
// answer.
func TestJSONAnswersInertOnATerminal(t *testing.T) {
	e := newEnv(t, envOptions{noReadModel: true})
	e.create(t, "tty")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	o, err := e.system.Send(ctx, fsm.Command{Type: fsm.ProvisionFailed, Workspace: "tty", Generation: 1, Reason: containerText})
	if err != nil || o.Outcome != fsm.Accepted {
		t.Fatalf("provision_failed: %+v %v", o, err)
	}

	r := e.do(t, "GET", "/v1/workspaces/tty/events", "")
	e.wantStatus(t, r, http.StatusOK)
	checkInert(t, "GET …/events", r.body)
	var h struct {
		Events []api.Event `json:"events"`
	}
	r.decode(t, &h)
	if len(h.Events) != 2 || h.Events[1].Reason != containerText {
		t.Fatalf("GET …/events: %q, want the reason %q as it was", r.body, containerText)
	}

	// The follow stream, read as raw lines.
	req, err := http.NewRequestWithContext(ctx, "GET", e.srv.URL+"/v1/workspaces/tty/events?follow=1", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+e.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if line := sc.Bytes(); bytes.HasPrefix(line, []byte("data: ")) && bytes.Contains(line, []byte(fsm.ProvisionFailedEv)) {
			checkInert(t, "follow stream", line)
			return
		}
	}
	t.Fatalf("no provision_failed event on the follow stream: %v", sc.Err())
}

// checkInert fails unless b holds no character that acts on a terminal
// but a newline.
func checkInert(t *testing.T, what string, b []byte) {
	t.Helper()
	if i := bytes.IndexFunc(b, func(r rune) bool { return r != '\n' && termsafe.Unsafe(r) }); i >= 0 {
		t.Errorf("%s: a raw %q at byte %d: %q", what, []rune(string(b[i:]))[0], i, b)
	}
}
