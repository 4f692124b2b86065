package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/turnstile-dev/turnstile/api"
	"github.com/turnstile-dev/turnstile/client"
	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/internal/testenv"
)

// background is a CLI process left running (--follow, --watch), its
// output readable while it runs.
type background struct {
	cmd    *exec.Cmd
	out    *syncBuffer
	stderr *syncBuffer
	done   chan struct{}
}

// startCLI runs the CLI in dir with the base environment plus env until
// the test ends (or stop).
func startCLI(t *testing.T, dir string, env []string, args ...string) *background {
	t.Helper()
	b := &background{out: &syncBuffer{}, stderr: &syncBuffer{}, done: make(chan struct{})}
	b.cmd = exec.Command(filepath.Join(binDir, "turnstile"), args...)
	b.cmd.Dir = dir
	b.cmd.Env = append(baseEnv(), env...)
	b.cmd.Stdout, b.cmd.Stderr = b.out, b.stderr
	if err := b.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = b.cmd.Wait(); close(b.done) }()
	t.Cleanup(func() { b.stop() })
	return b
}

func (b *background) stop() {
	select {
	case <-b.done:
	default:
		_ = b.cmd.Process.Kill()
		<-b.done
	}
}

// waitOutput waits until the process's stdout holds every one of subs.
func (b *background) waitOutput(t *testing.T, timeout time.Duration, subs ...string) {
	t.Helper()
	waitFor(t, timeout, "the CLI prints "+strings.Join(subs, ", "), func() bool {
		select {
		case <-b.done:
			t.Fatalf("the CLI ended early:\nstdout:\n%s\nstderr:\n%s", b.out, b.stderr)
		default:
		}
		s := b.out.String()
		for _, sub := range subs {
			if !strings.Contains(s, sub) {
				return false
			}
		}
		return true
	})
}

// TestCLIOverHTTP runs every client command from a directory of its own
// with nothing but TURNSTILE_API_URL and TURNSTILE_API_TOKEN: no NATS URL,
// no database URL, no data dir. list follows its pages (--page-size 2
// stands in for the 1,000 of a full page), history --follow sees new
// events and resumes after serve restarts, get --watch re-prints on change.
// Issue 14 item 2.
func TestCLIOverHTTP(t *testing.T) {
	args := []string{"--provisioner", "sim", "--sim-min-latency", "0s", "--sim-max-latency", "100ms"}
	srv := startServe(t, serveOptions{args: args})
	away := testenv.WorkDir(t, "turnstile-e2e-away-")
	env := []string{"TURNSTILE_API_URL=" + srv.httpURL(), "TURNSTILE_API_TOKEN=" + srv.apiToken(t)}
	cli := func(args ...string) result {
		t.Helper()
		return runIn(t, away, env, append([]string{filepath.Join(binDir, "turnstile")}, args...)...)
	}

	ids := []string{"h-a", "h-b", "h-c", "h-d", "h-e"}
	for _, id := range ids {
		r := cli("create", id, "--wait", "--timeout", "60s")
		want(t, r, 0, "create "+id+" --wait over HTTP")
		if !strings.Contains(r.stdout, id+" is running at generation 1") {
			t.Fatalf("create --wait:\n%s", r)
		}
	}

	t.Run("Refused", func(t *testing.T) {
		r := cli("create", "h-a")
		want(t, r, 3, "create of an existing workspace")
		if !strings.Contains(r.stderr, "create h-a refused (exists)") {
			t.Fatalf("refusal:\n%s", r)
		}
		want(t, cli("start", "nobody"), 3, "start of an unknown workspace")
		want(t, cli("get", "nobody"), 3, "get of an unknown workspace")
		want(t, cli("create", "h-x", "--cpus", "-1"), 2, "create with a bad spec")
		r = runIn(t, away, []string{env[0], "TURNSTILE_API_TOKEN=" + strings.Repeat("x", 40)},
			filepath.Join(binDir, "turnstile"), "get", "h-a")
		want(t, r, 1, "get with a wrong token")
		// serve cannot prove it holds that token: it is never sent.
		if !strings.Contains(r.stderr, "did not prove that it holds the API token") {
			t.Fatalf("wrong token:\n%s", r)
		}
	})

	t.Run("ListPages", func(t *testing.T) {
		r := cli("list", "--page-size", "2", "-o", "json")
		want(t, r, 0, "list --page-size 2")
		var l api.WorkspaceList
		if err := json.Unmarshal([]byte(r.stdout), &l); err != nil {
			t.Fatalf("list -o json: %v\n%s", err, r)
		}
		var got []string
		for _, w := range l.Workspaces {
			got = append(got, w.ID)
		}
		if strings.Join(got, ",") != strings.Join(ids, ",") || l.Next != "" {
			t.Fatalf("list over pages of 2: %v (next %q), want %v", got, l.Next, ids)
		}
		r = cli("list", "--page-size", "2", "--limit", "3")
		want(t, r, 0, "list --limit 3")
		if !strings.Contains(r.stdout, "3 workspace(s)") || !strings.Contains(r.stdout, "more after h-c") || !strings.Contains(r.stdout, "AGE") {
			t.Fatalf("list --limit 3:\n%s", r)
		}
		r = cli("list", "-o", "yaml", "--status", "running")
		want(t, r, 0, "list -o yaml")
		if !strings.Contains(r.stdout, "id: h-e") || !strings.Contains(r.stdout, "checkpoint:") {
			t.Fatalf("list -o yaml:\n%s", r)
		}
	})

	t.Run("Reads", func(t *testing.T) {
		r := cli("get", "h-a")
		want(t, r, 0, "get")
		for _, s := range []string{"running", "REFLECTS", "CREATED"} {
			if !strings.Contains(r.stdout, s) {
				t.Fatalf("get lacks %q:\n%s", s, r)
			}
		}
		r = cli("history", "h-a")
		want(t, r, 0, "history")
		if !strings.Contains(r.stdout, "none → provisioning") || !strings.Contains(r.stdout, "api:default") {
			t.Fatalf("history:\n%s", r)
		}
		want(t, cli("wait", "h-a", "--state", "running", "--timeout", "10s"), 0, "wait for a state reached")
		want(t, cli("wait", "h-a", "--state", "stopped", "--timeout", "1s"), 4, "wait that times out")
		r = cli("explain", "h-a")
		want(t, r, 0, "explain")
		if !strings.Contains(r.stdout, "IN FLIGHT  nothing") {
			t.Fatalf("explain:\n%s", r)
		}
		r = cli("audit", "h-a", "--at", "1")
		want(t, r, 0, "audit")
		if !strings.Contains(r.stdout, "audit h-a: OK: 2 event(s)") || !strings.Contains(r.stdout, "at event 1 (stream seq") {
			t.Fatalf("audit:\n%s", r)
		}
		want(t, cli("audit", "nobody"), 3, "audit of an unknown workspace")
		r = cli("audit", "--all")
		want(t, r, 0, "audit --all")
		if !strings.Contains(r.stdout, "audit --all: OK: 5 workspace(s)") {
			t.Fatalf("audit --all:\n%s", r)
		}
		r = cli("configure", "h-b", "--env", "A=1", "--wait", "--timeout", "60s")
		want(t, r, 0, "configure --wait")
		// --wait waits on the event stream; the read model that get shows
		// follows it (latest_event_seq says by how much it is behind).
		waitFor(t, 30*time.Second, "get to show the configure", func() bool {
			r = cli("get", "h-b", "-o", "json")
			var w api.Workspace
			if err := json.Unmarshal([]byte(r.stdout), &w); err != nil {
				t.Fatalf("get after configure: %v\n%s", err, r)
			}
			return w.Spec.Env["A"] == "1" && w.SpecVersion == 2
		})
	})

	// Following and watching; serve restarts under them (not in a
	// subtest: the restarted serve lives as long as the test).
	follow := startCLI(t, away, env, "history", "h-c", "--follow")
	follow.waitOutput(t, 30*time.Second, "workspace.created", "workspace.provisioned")
	watch := startCLI(t, away, env, "get", "h-c", "--watch", "-o", "json")
	watch.waitOutput(t, 30*time.Second, `"status":"running"`)

	want(t, cli("stop", "h-c", "--wait", "--timeout", "60s"), 0, "stop h-c")
	follow.waitOutput(t, 30*time.Second, "workspace.stop_requested", "workspace.stopped")
	watch.waitOutput(t, 30*time.Second, `"status":"stopped"`)

	// serve goes away and comes back: the follow resumes after the
	// last event it showed, and shows each event once.
	if code := srv.terminate(time.Minute); code != 0 {
		t.Fatalf("serve exited %d:\n%s", code, srv.stderr)
	}
	_ = startServe(t, serveOptions{args: args, dir: srv.dir, natsPort: srv.natsPort, httpPort: srv.httpPort})
	want(t, cli("start", "h-c", "--wait", "--timeout", "60s"), 0, "start h-c after the restart")
	follow.waitOutput(t, time.Minute, "workspace.start_requested")
	if n := strings.Count(follow.out.String(), "workspace.stop_requested"); n != 1 {
		t.Fatalf("after resuming, stop_requested shows %d times:\n%s", n, follow.out)
	}
	if !strings.Contains(follow.stderr.String(), "resuming") {
		t.Fatalf("the follow did not say it lost the stream:\n%s", follow.stderr)
	}

	want(t, cli("delete", "h-e", "--wait", "--timeout", "60s"), 0, "delete --wait")
}

// TestCLIListPastOneThousand: 1,001 workspaces (created in bulk over NATS,
// as a service would) are listed whole through the API from elsewhere:
// list reads a full page of 1,000 and follows its next.
func TestCLIListPastOneThousand(t *testing.T) {
	srv := startServe(t, serveOptions{args: []string{"--provisioner", "sim", "--sim-min-latency", "0s", "--sim-max-latency", "10ms"}})
	cl, _ := srv.goClient(t)
	const n = 1001
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	next := make(chan int, n)
	for i := range n {
		next <- i
	}
	close(next)
	for range 16 {
		wg.Go(func() {
			for i := range next {
				o, err := cl.SendNew(ctx, fsm.Command{ID: client.NewCommandID(), Type: fsm.Create, Workspace: fmt.Sprintf("bulk-%04d", i)})
				if err == nil && o.Outcome != fsm.Accepted {
					err = fmt.Errorf("create bulk-%04d: %s %s", i, o.Outcome, o.Reason)
				}
				if err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	away := testenv.WorkDir(t, "turnstile-e2e-away-")
	env := []string{"TURNSTILE_API_URL=" + srv.httpURL(), "TURNSTILE_API_TOKEN=" + srv.apiToken(t)}
	var l api.WorkspaceList
	waitFor(t, time.Minute, "list shows all 1,001 workspaces", func() bool {
		r := runIn(t, away, env, filepath.Join(binDir, "turnstile"), "list", "-o", "json")
		want(t, r, 0, "list")
		l = api.WorkspaceList{}
		if err := json.Unmarshal([]byte(r.stdout), &l); err != nil {
			t.Fatalf("list -o json: %v\n%s", err, r)
		}
		return len(l.Workspaces) == n
	})
	if l.Workspaces[0].ID != "bulk-0000" || l.Workspaces[n-1].ID != fmt.Sprintf("bulk-%04d", n-1) || l.Next != "" {
		t.Fatalf("list: first %s, last %s, next %q", l.Workspaces[0].ID, l.Workspaces[n-1].ID, l.Next)
	}
	r := runIn(t, away, env, filepath.Join(binDir, "turnstile"), "list", "--limit", "1000")
	want(t, r, 0, "list --limit 1000")
	if !strings.Contains(r.stdout, "1000 workspace(s)") || !strings.Contains(r.stdout, "more after bulk-0999") {
		t.Fatalf("list --limit 1000 should say there is more:\n%.300s", r.stdout[max(0, len(r.stdout)-300):])
	}
}
