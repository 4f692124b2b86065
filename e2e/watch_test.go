package e2e_test

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/turnstile-dev/turnstile/api"
	"github.com/turnstile-dev/turnstile/fsm"
)

// TestWatchAndExplain runs serve with a simulator that takes 20s to
// provision: explain (HTTP and CLI) names the attempt and the deadline
// serve was given, the commands allowed now; a follow stream of the whole
// event stream shows the create with its cause and ends cleanly when serve
// is stopped. Issue 14 items 1 and 5.
func TestWatchAndExplain(t *testing.T) {
	srv := startServe(t, serveOptions{args: []string{"--provisioner", "sim", "--sim-min-latency", "20s", "--sim-max-latency", "20s",
		"--deadline-provisioning", "7m"}})
	want(t, srv.turnstile(t, "create", "slow"), 0, "create slow")

	status, body := srv.httpDo(t, "GET", "/v1/workspaces/slow/explain", "", "")
	var x api.Explanation
	if status != http.StatusOK || json.Unmarshal(body, &x) != nil {
		t.Fatalf("explain: %d %s", status, body)
	}
	if a := x.InFlight; x.State != "provisioning" || a == nil || a.Kind != "provision" || a.Generation != 1 || a.Deadline == nil ||
		!a.Deadline.Equal(a.Started.Add(7*time.Minute)) || a.Cause.Kind != "user" || a.Cause.Command != fsm.Create {
		t.Fatalf("explain: %s", body)
	}
	r := srv.turnstile(t, "explain", "slow", "--deadline-provisioning", "7m")
	want(t, r, 0, "turnstile explain")
	for _, s := range []string{"provision, generation 1", "ALLOWED", "stop, delete, configure"} {
		if !strings.Contains(r.stdout, s) {
			t.Fatalf("explain lacks %q:\n%s", s, r)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", srv.httpURL()+"/v1/events?follow=1", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+srv.apiToken(t))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("follow: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	sc := bufio.NewScanner(resp.Body)
	var first api.Event
	for sc.Scan() {
		if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
			if err := json.Unmarshal([]byte(data), &first); err != nil {
				t.Fatal(err)
			}
			break
		}
	}
	if first.Workspace != "slow" || first.Type != fsm.Created || !strings.HasPrefix(first.Cause.Actor, "cli") {
		t.Fatalf("first event: %+v", first)
	}
	ended := make(chan error, 1)
	go func() {
		for sc.Scan() {
		}
		ended <- sc.Err()
	}()
	if code := srv.terminate(time.Minute); code != 0 {
		t.Fatalf("serve exited %d with a follow stream open:\n%s", code, srv.stderr)
	}
	select {
	case err := <-ended:
		if err != nil {
			t.Fatalf("the stream ended with %v, want a clean end", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("the follow stream outlived serve")
	}
}
