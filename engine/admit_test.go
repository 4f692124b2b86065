package engine_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/turnstile-dev/turnstile/engine"
	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/internal/testenv"
)

// TestAdmitSpec: a create or configure whose spec the installation does
// not allow (Config.AdmitSpec) is refused invalid with the admission's
// reason and the workspace's state, nothing stored; one it allows is
// accepted; a command the lifecycle refuses anyway keeps that refusal.
func TestAdmitSpec(t *testing.T) {
	const most = 1 << 30
	admit := func(s fsm.Spec) error {
		if s.MemoryBytes > most {
			return errors.New("memory limit above the maximum 1g (--max-memory)")
		}
		return nil
	}
	core := testenv.StartCore(t, testenv.CoreOptions{Engine: engine.Config{AdmitSpec: admit}})
	cl := core.Client(t, "alice")
	ctx := context.Background()

	big := &fsm.Spec{MemoryBytes: 2 * most}
	refused := func(what string, o fsm.Outcome, rej *fsm.Rejection, status fsm.Status) {
		t.Helper()
		if o != fsm.Rejected || rej == nil || rej.Code != fsm.CodeInvalid || !strings.Contains(rej.Message, "--max-memory") || rej.State != status {
			t.Fatalf("%s: outcome %s, rejection %+v; want invalid naming --max-memory in state %q", what, o, rej, status)
		}
	}
	o := send(t, cl, fsm.Command{Type: fsm.Create, Workspace: "adm", Spec: big})
	refused("create above the maximum", o.Outcome, o.Rejection, fsm.None)
	if h, err := core.Store.Load(ctx, "adm"); err != nil || h.Last != nil {
		t.Fatalf("after the refused create: head %+v, %v; want no event", h, err)
	}

	o = send(t, cl, fsm.Command{Type: fsm.Create, Workspace: "adm", Spec: &fsm.Spec{MemoryBytes: most}})
	if o.Outcome != fsm.Accepted {
		t.Fatalf("create at the maximum: %+v", o)
	}
	h, err := core.Store.Load(ctx, "adm")
	if err != nil {
		t.Fatal(err)
	}
	o = send(t, cl, fsm.Command{Type: fsm.Configure, Workspace: "adm", Spec: big})
	refused("configure above the maximum", o.Outcome, o.Rejection, h.State.Status)
	if after, err := core.Store.Load(ctx, "adm"); err != nil || after.StreamSeq != h.StreamSeq || after.State.SpecVersion != h.State.SpecVersion {
		t.Fatalf("after the refused configure: head %+v, %v; want it unchanged from %+v", after, err, h)
	}
	// The lifecycle's refusal comes first: the workspace exists.
	if o := send(t, cl, fsm.Command{Type: fsm.Create, Workspace: "adm", Spec: big}); o.Outcome != fsm.Rejected || o.Rejection.Code != fsm.CodeExists {
		t.Fatalf("create of an existing workspace with a spec above the maximum: %+v", o)
	}
}

// TestAdmitSpecOnFirstHandlingOnly: a command handled before is decided by
// the lifecycle alone. It may be in another engine's hands at once, under
// another serve's policy (or a release with none), whose first handling
// writes its event and then its outcome: a rejection stored between the
// two would stand beside that event. The lifecycle's verdict is the other
// engine's too; the provisioner still refuses the spec.
func TestAdmitSpecOnFirstHandlingOnly(t *testing.T) {
	core := testenv.StartCore(t, testenv.CoreOptions{Engine: engine.Config{AdmitSpec: func(fsm.Spec) error { return errors.New("no spec is allowed here") }}})
	e := core.Engines[0]
	cmd := fsm.Command{ID: "c-1", Type: fsm.Create, Workspace: "adm-again", Spec: &fsm.Spec{MemoryBytes: 1 << 30}}
	if d := e.DecideForTest(fsm.Workspace{}, cmd, false); d.Outcome != fsm.Rejected || d.Rejection.Code != fsm.CodeInvalid || d.Rejection.Message != "no spec is allowed here" {
		t.Fatalf("first handling: %+v", d)
	}
	if d := e.DecideForTest(fsm.Workspace{}, cmd, true); d.Outcome != fsm.Accepted {
		t.Fatalf("handled before: %+v, want the lifecycle's verdict (accepted)", d)
	}
	if d := e.DecideForTest(fsm.Workspace{}, fsm.Command{ID: "c-2", Type: fsm.Start, Workspace: "adm-again"}, false); d.Outcome != fsm.Rejected || d.Rejection.Code != fsm.CodeNotFound {
		t.Fatalf("start of a workspace that does not exist: %+v, want the lifecycle's not_found", d)
	}
}
