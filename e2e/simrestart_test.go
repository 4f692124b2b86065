package e2e_test

import (
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/turnstile-dev/turnstile/provisioner"
)

// TestSimSurvivesRestart: workspaces running under serve --provisioner sim
// stay running across a restart of serve, after SIGTERM and after kill -9:
// the simulator's containers persist in <data-dir>/sim/host.json, so the
// reconciler's first pass finds them and appends nothing (issue 15 item 6;
// before, every one got container_exited "container ... is gone").
//
// That the pass ran is proven, not waited for by time: before each restart
// an orphan volume (of a workspace that never existed) is added to the state
// file, and the reconciler removes orphan volumes last in its pass.
func TestSimSurvivesRestart(t *testing.T) {
	args := []string{"--provisioner", "sim", "--sim-min-latency", "0s", "--sim-max-latency", "50ms"}
	srv := startServe(t, serveOptions{args: args})
	ids := []string{"keep-a", "keep-b", "keep-c"}
	for _, id := range ids {
		want(t, srv.turnstile(t, "create", id, "--wait", "--timeout", "60s"), 0, "create "+id)
	}
	before := map[string][]string{}
	for _, id := range ids {
		before[id] = historyTypes(t, srv, id)
	}

	for _, how := range []string{"sigterm", "kill9"} {
		switch how {
		case "sigterm":
			if code := srv.terminate(time.Minute); code != 0 {
				t.Fatalf("serve exited %d after SIGTERM:\n%s", code, srv.stderr)
			}
		case "kill9":
			if err := srv.cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			srv.waitExit(time.Minute)
		}
		orphan := "orphan-" + how
		planted := plantOrphanVolume(t, filepath.Join(srv.dir, ".turnstile", "sim", "host.json"), orphan)

		srv = startServe(t, serveOptions{args: args, dir: srv.dir, natsPort: srv.natsPort, httpPort: srv.httpPort})
		waitLog(t, srv, 2*time.Minute, func(log string) bool {
			return strings.Contains(log, "running workspace has no running container") ||
				(planted && strings.Contains(log, "reconciler: removing orphan volume") && strings.Contains(log, orphan))
		})
		if log := srv.stderr.String(); strings.Contains(log, "running workspace has no running container") {
			t.Fatalf("after %s and a restart the reconciler found running workspaces without their container:\n%s", how, log)
		}
		for _, id := range ids {
			if got := historyTypes(t, srv, id); !slices.Equal(got, before[id]) {
				t.Fatalf("after %s and a restart, %s's history is %v; before it was %v", how, id, got, before[id])
			}
			r := srv.turnstile(t, "wait", id, "--state", "running", "--timeout", "60s")
			want(t, r, 0, "wait "+id+" running after the "+how+" restart")
		}
	}
}

// historyTypes is the workspace's event types, oldest first.
func historyTypes(t *testing.T, srv *server, id string) []string {
	t.Helper()
	r := srv.turnstile(t, "history", id, "-o", "json")
	want(t, r, 0, "history "+id)
	var h struct {
		Events []struct {
			Type string `json:"type"`
		} `json:"events"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &h); err != nil {
		t.Fatalf("history %s -o json: %v\n%s", id, err, r)
	}
	out := make([]string, len(h.Events))
	for i, e := range h.Events {
		out[i] = e.Type
	}
	return out
}

// plantOrphanVolume adds to the simulator's state file a volume of the
// workspace orphan, which never existed, owned by the installation of the
// file's first volume. It reports false when there is no state file (a
// simulator that keeps nothing: the test then fails on the reports).
func plantOrphanVolume(t *testing.T, path, orphan string) bool {
	t.Helper()
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		t.Logf("no simulator state file %s", path)
		return false
	}
	if err != nil {
		t.Fatal(err)
	}
	var st map[string]any
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatalf("state file %s: %v", path, err)
	}
	vols, _ := st["volumes"].([]any)
	if len(vols) == 0 {
		t.Fatalf("state file %s lists no volumes:\n%s", path, b)
	}
	first, _ := vols[0].(map[string]any)
	st["volumes"] = append(vols, map[string]any{"name": provisioner.VolumeName(orphan), "workspace": orphan,
		"installation": first["installation"]})
	if b, err = json.Marshal(st); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return true
}

// waitLog waits until ok accepts serve's output, failing after timeout or
// when serve exits.
func waitLog(t *testing.T, srv *server, timeout time.Duration, ok func(string) bool) {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for !ok(srv.stderr.String()) {
		select {
		case <-srv.done:
			t.Fatalf("serve exited (%v):\n%s", srv.exitErr, srv.stderr)
		case <-deadline.C:
			t.Fatalf("serve's log did not show the reconciler's pass within %v:\n%s", timeout, srv.stderr)
		case <-tick.C:
		}
	}
}
