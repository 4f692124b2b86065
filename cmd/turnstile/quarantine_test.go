package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/internal/testenv"
)

// TestUnreadableMessagesInCLI puts a garbage message and an envelope of
// another workspace on a workspace's event subject. Issue 12 item 5: on
// main, history, wait and stop failed or hung on them, and audit --all
// stopped with an error instead of a finding. Now history and wait skip
// them, stop is decided, and audit (one and --all) reports each as a
// finding and exits 1.
func TestUnreadableMessagesInCLI(t *testing.T) {
	core := testenv.StartCore(t, testenv.CoreOptions{})
	env := map[string]string{"TURNSTILE_NATS_URL": core.NATS.URL}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, id := range []string{"control", "other"} {
		if code, out, errs := runCLI(t, env, "create", id); code != 0 {
			t.Fatalf("create %s: exit %d\n%s%s", id, code, out, errs)
		}
	}
	sys := core.SystemClient(t, "test-provisioner")
	if o, err := sys.Send(ctx, fsm.Command{Type: fsm.ProvisionSucceeded, Workspace: "control", Generation: 1}); err != nil || o.Outcome != fsm.Accepted {
		t.Fatal(o, err)
	}
	h, err := core.Store.Load(ctx, "other")
	if err != nil {
		t.Fatal(err)
	}
	other, err := json.Marshal(h.Last)
	if err != nil {
		t.Fatal(err)
	}
	for _, data := range [][]byte{[]byte(`{"garbage":true}`), other} {
		m := nats.NewMsg(core.Store.Names().Event("control"))
		m.Data = data
		if _, err := core.JS.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}

	// A workspace whose subject holds nothing readable does not exist.
	m := nats.NewMsg(core.Store.Names().Event("ghost"))
	m.Data = []byte(`{"garbage":true}`)
	if _, err := core.JS.PublishMsg(ctx, m); err != nil {
		t.Fatal(err)
	}
	if code, out, errs := runCLI(t, env, "wait", "ghost", "--state", "running", "--timeout", "10s"); code != exitRejected {
		t.Fatalf("wait ghost: exit %d\n%s%s", code, out, errs)
	}
	if code, out, errs := runCLI(t, env, "history", "ghost"); code != exitRejected {
		t.Fatalf("history ghost: exit %d\n%s%s", code, out, errs)
	}

	code, out, errs := runCLI(t, env, "history", "control")
	if code != 0 || strings.Count(out, "workspace.") != 2 {
		t.Fatalf("history: exit %d\n%s%s", code, out, errs)
	}
	if code, out, errs = runCLI(t, env, "wait", "control", "--state", "running", "--timeout", "10s"); code != 0 {
		t.Fatalf("wait: exit %d\n%s%s", code, out, errs)
	}
	if code, out, errs = runCLI(t, env, "stop", "control"); code != 0 || !strings.Contains(out, "accepted") {
		t.Fatalf("stop: exit %d\n%s%s", code, out, errs)
	}
	code, out, errs = runCLI(t, env, "audit", "control")
	if code != exitError || strings.Count(out, "unreadable message on turnstile.evt.control") != 2 ||
		!strings.Contains(out, "(misaddressed") || !strings.Contains(out, "now: stopping at generation 2") {
		t.Fatalf("audit control: exit %d\n%s%s", code, out, errs)
	}
	code, out, errs = runCLI(t, env, "audit", "--all", "-o", "json")
	var rep auditReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("audit --all: exit %d, %v\n%s%s", code, err, out, errs)
	}
	if code != exitError || rep.OK || len(rep.Violations) != 3 || rep.Workspaces != 2 || rep.Violations[0].Workspace != "control" ||
		!strings.Contains(rep.Violations[0].Problem, "(malformed") {
		t.Fatalf("audit --all: exit %d\n%s%s", code, out, errs)
	}
}
