package e2e_test

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/internal/testenv"
)

// TestAuditAll: `audit --all` passes on a busy history (many workspaces,
// racing commands, quick simulated outcomes) and fails, naming the
// workspace, once an illegal event is slipped into the stream. The tamper
// needs a NATS user allowed to write events, which serve's embedded NATS
// gives no client (issue 12 item 2), so serve runs on an external NATS
// without authentication here.
func TestAuditAll(t *testing.T) {
	ext := testenv.StartNATS(t, testenv.NATSOptions{})
	port := ext.Server.Addr().(*net.TCPAddr).Port
	srv := startServe(t, serveOptions{natsPort: port,
		args: []string{"--provisioner", "sim", "--sim-min-latency", "0s", "--sim-max-latency", "30ms", "--nats-url", ext.URL}})
	cl, js := srv.goClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	const workspaces = 40
	script := []fsm.CommandType{fsm.Create, fsm.Restart, fsm.Stop, fsm.Start, fsm.Configure, fsm.Restart, fsm.Stop, fsm.Delete, fsm.Create, fsm.Restart}
	var wg sync.WaitGroup
	errs := make(chan error, workspaces)
	last := make([]string, workspaces) // each workspace's last command
	for i := range workspaces {
		id := fmt.Sprintf("busy-%02d", i)
		wg.Go(func() {
			for j, c := range script {
				cmd := fsm.Command{Type: c, Workspace: id}
				if c == fsm.Configure {
					cmd.Spec = &fsm.Spec{Env: map[string]string{"ROUND": fmt.Sprint(j)}}
				}
				// Half the workspaces fire without waiting: commands race
				// the outcomes of earlier ones.
				cmd.ID = fmt.Sprintf("%s-%d", id, j)
				last[i] = cmd.ID
				var err error
				if i%2 == 0 {
					_, err = cl.Publish(ctx, cmd)
				} else {
					_, err = cl.Send(ctx, cmd)
				}
				if err != nil {
					errs <- fmt.Errorf("%s %s: %w", c, id, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// A few through the CLI too.
	want(t, srv.turnstile(t, "create", "busy-cli", "--wait"), 0, "create busy-cli")
	want(t, srv.turnstile(t, "restart", "busy-cli", "--wait"), 0, "restart busy-cli")

	store := cl.Store()
	settled := func() bool {
		for i := range workspaces {
			if _, ok, err := store.Outcome(ctx, last[i]); err != nil || !ok {
				return false
			}
			h, err := store.Load(ctx, fmt.Sprintf("busy-%02d", i))
			if err != nil || h.State.Status.InFlight() || h.State.Seq == 0 {
				return false
			}
		}
		return true
	}
	waitFor(t, 2*time.Minute, "every busy workspace settles", settled)

	r := srv.turnstile(t, "audit", "--all")
	want(t, r, 0, "audit --all on a busy history")
	if !strings.Contains(r.stdout, fmt.Sprintf("OK: %d workspace(s)", workspaces+1)) {
		t.Fatalf("audit --all summary:\n%s", r)
	}

	// Tamper: append a provisioned event for a generation that never was.
	h, err := store.Load(ctx, "busy-07")
	if err != nil || h.Last == nil {
		t.Fatal(h, err)
	}
	bad := *h.Last
	bad.ID, bad.CommandID, bad.Seq, bad.Type = "tampered", "tampered", bad.Seq+1, fsm.Provisioned
	bad.Generation = h.State.Generation + 5
	bad.State.Seq, bad.State.Generation, bad.State.Status = bad.Seq, bad.Generation, fsm.Running
	b, err := events.Codec{}.Encode(bad)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, events.NewNames("").Event("busy-07"), b); err != nil {
		t.Fatal(err)
	}
	r = srv.turnstile(t, "audit", "--all")
	want(t, r, 1, "audit --all on a tampered history")
	if !strings.Contains(r.stdout, "FAILED") || !strings.Contains(r.stdout, "busy-07 seq") || !strings.Contains(r.stdout, "illegal transition") {
		t.Fatalf("audit --all should name busy-07:\n%s", r)
	}
	want(t, srv.turnstile(t, "audit", "busy-07"), 1, "audit busy-07")
	want(t, srv.turnstile(t, "audit", "busy-08"), 0, "audit busy-08")

	// Over HTTP alone, from another directory and with no NATS access,
	// serve runs the same audits: the same output and exit codes (issue
	// 14 item 2).
	away := testenv.WorkDir(t, "turnstile-e2e-away-")
	apiEnv := []string{"TURNSTILE_API_URL=" + srv.httpURL(), "TURNSTILE_API_TOKEN=" + srv.apiToken(t)}
	for _, args := range [][]string{{"audit", "--all"}, {"audit", "busy-07"}, {"audit", "busy-08", "--at", "2"}, {"audit", "nobody"}, {"audit", "--all", "-o", "json"}} {
		direct := srv.turnstile(t, args...)
		viaHTTP := runIn(t, away, apiEnv, append([]string{filepath.Join(binDir, "turnstile")}, args...)...)
		if viaHTTP.code != direct.code || viaHTTP.stdout != direct.stdout || viaHTTP.stderr != direct.stderr {
			t.Fatalf("%v over HTTP differs from the direct path:\nHTTP: %s\ndirect: %s", args, viaHTTP, direct)
		}
	}
}

// waitFor polls cond every 50ms until it holds, failing after timeout.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting until %s", timeout, what)
		}
		<-tick.C
	}
}
