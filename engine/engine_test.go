package engine_test

import (
	"testing"

	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/internal/testenv"
)

func TestLifecycleThroughEngine(t *testing.T) {
	core := testenv.StartCore(t, testenv.CoreOptions{})
	prov := startProvisioner(t, core, nil)
	cl := core.Client(t, "alice")

	o := send(t, cl, fsm.Command{Type: fsm.Create, Workspace: "ws-1"})
	if o.Outcome != fsm.Accepted || o.Generation != 1 || o.State != fsm.Provisioning || o.EventSeq != 1 {
		t.Fatalf("create: %+v", o)
	}
	waitState(t, core, "ws-1", fsm.Running, 1)
	o = send(t, cl, fsm.Command{Type: fsm.Start, Workspace: "ws-1"})
	if o.Outcome != fsm.Noop {
		t.Fatalf("start while running: %+v", o)
	}
	o = send(t, cl, fsm.Command{Type: fsm.Restart, Workspace: "ws-1"})
	if o.Outcome != fsm.Accepted || o.Generation != 2 {
		t.Fatalf("restart: %+v", o)
	}
	waitState(t, core, "ws-1", fsm.Running, 2)
	o = send(t, cl, fsm.Command{Type: fsm.Delete, Workspace: "ws-1"})
	if o.Outcome != fsm.Accepted || o.State != fsm.Deleting {
		t.Fatalf("delete: %+v", o)
	}
	waitState(t, core, "ws-1", fsm.Deleted, 3)
	o = send(t, cl, fsm.Command{Type: fsm.Start, Workspace: "ws-1"})
	if !isRejection(o, fsm.CodeGone) {
		t.Fatalf("start after delete: %+v", o)
	}
	o = send(t, cl, fsm.Command{Type: fsm.Stop, Workspace: "nope"})
	if !isRejection(o, fsm.CodeNotFound) {
		t.Fatalf("stop of unknown: %+v", o)
	}
	quiesce(t, core, prov)
	checkLog(t, core)
}
