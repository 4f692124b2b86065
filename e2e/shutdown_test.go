package e2e_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/turnstile-dev/turnstile/client"
	"github.com/turnstile-dev/turnstile/fsm"
)

// TestShutdownLosesNoCommand: SIGTERM while commands are still being
// handled stops serve cleanly (exit 0, PostgreSQL stopped, its URL file
// removed); after a restart on the same data, every command whose publish
// was acknowledged has its outcome and the history audits clean.
func TestShutdownLosesNoCommand(t *testing.T) {
	srv := startServe(t, serveOptions{args: []string{"--provisioner", "sim", "--sim-min-latency", "0s", "--sim-max-latency", "50ms"}})
	cl, _ := srv.goClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	// Publishers keep going while SIGTERM is sent, until the server stops
	// acknowledging: commands are in flight, queued and arriving at once.
	const publishers, perPublisher, signalAfter = 8, 400, 600
	var mu sync.Mutex
	var acked []string
	var signalled atomic.Bool
	var pendingAtSignal int
	var wg sync.WaitGroup
	for p := range publishers {
		wg.Go(func() {
			for i := range perPublisher {
				id := fmt.Sprintf("sd-%d-%d", p, i%30)
				typ := fsm.Create
				if i >= 30 {
					typ = []fsm.CommandType{fsm.Restart, fsm.Stop, fsm.Start}[i%3]
				}
				pctx, pcancel := context.WithTimeout(ctx, 5*time.Second)
				cmd, err := cl.Publish(pctx, fsm.Command{Type: typ, Workspace: id})
				pcancel()
				if err != nil {
					if !signalled.Load() {
						t.Errorf("publish %s %s before the signal: %v", typ, id, err)
					}
					return // the server is going away: this one was not acknowledged
				}
				mu.Lock()
				acked = append(acked, cmd.ID)
				if len(acked) == signalAfter {
					pendingAtSignal = countPending(ctx, cl, acked)
					if err := srv.cmd.Process.Signal(syscall.SIGTERM); err != nil {
						t.Error(err)
					}
					signalled.Store(true)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if !signalled.Load() {
		t.Fatal("the publishers finished before the signal")
	}
	t.Logf("%d commands acknowledged, %d of the first %d without an outcome when SIGTERM was sent", len(acked), pendingAtSignal, signalAfter)

	if code := srv.terminate(time.Minute); code != 0 {
		t.Fatalf("serve exited %d after SIGTERM:\n%s", code, srv.stderr)
	}
	logs := srv.stderr.String()
	if !strings.Contains(logs, "shutting down") || !strings.Contains(logs, "stopped cleanly") {
		t.Fatalf("serve did not say it shut down cleanly:\n%s", logs)
	}
	if _, err := os.Stat(filepath.Join(srv.dir, ".turnstile", "database-url")); !os.IsNotExist(err) {
		t.Fatalf("database-url left behind after a clean stop: %v", err)
	}

	again := startServe(t, serveOptions{args: []string{"--provisioner", "sim", "--sim-min-latency", "0s", "--sim-max-latency", "50ms"},
		dir: srv.dir, natsPort: srv.natsPort, httpPort: srv.httpPort})
	cl2, _ := again.goClient(t)
	for _, id := range acked {
		octx, ocancel := context.WithTimeout(ctx, time.Minute)
		o, err := cl2.Outcome(octx, id)
		ocancel()
		if err != nil {
			t.Fatalf("command %s lost: %v", id, err)
		}
		if o.CommandID != id {
			t.Fatalf("outcome of %s names %s", id, o.CommandID)
		}
	}
	r := again.turnstile(t, "audit", "--all")
	want(t, r, 0, "audit --all after the restart")
}

// countPending counts the commands without a stored outcome.
func countPending(ctx context.Context, cl *client.Client, ids []string) int {
	n := 0
	for _, id := range ids {
		if _, ok, err := cl.Store().Outcome(ctx, id); err == nil && !ok {
			n++
		}
	}
	return n
}
