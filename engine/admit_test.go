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
