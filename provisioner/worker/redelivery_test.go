package worker_test

import (
	"context"
	"testing"
	"time"

	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/internal/testenv"
	"github.com/turnstile-dev/turnstile/provisioner"
)

// lingering is a provisioner whose cancelled Provision takes a while to
// clean up, as Docker's can under load.
type lingering struct {
	provisioner.Provisioner
	linger time.Duration
}

func (l lingering) Provision(ctx context.Context, req provisioner.Request) (provisioner.Result, error) {
	res, err := l.Provisioner.Provision(ctx, req)
	if ctx.Err() != nil {
		<-time.After(l.linger) // simulated slow cleanup, not synchronisation
	}
	return res, err
}

// A cancelled provision whose cleanup outlasts the ack wait: the stop and
// delete that overtook it are still carried out. (Found by the 50-workspace
// Docker test: the provision's event was redelivered after the newer ones,
// taken for the newest, and the delete acknowledged without being done,
// leaving the workspace in deleting.)
func TestSlowCleanupDoesNotSwallowNewerActions(t *testing.T) {
	p := newSim(t, 0, time.Millisecond)
	r := newRig(t, lingering{Provisioner: p, linger: 1500 * time.Millisecond}, rigOptions{ackWait: 300 * time.Millisecond})
	r.send(t, fsm.Command{Type: fsm.Create, Workspace: "linger", Spec: &fsm.Spec{Env: map[string]string{"AGENT_START_DELAY": "1h"}}})
	testenv.Eventually(t, 10*time.Second, "the container of generation 1 to exist", func() bool {
		_, err := p.Inspect(context.Background(), "linger")
		return err == nil
	})
	r.send(t, fsm.Command{Type: fsm.Stop, Workspace: "linger"})
	r.send(t, fsm.Command{Type: fsm.Delete, Workspace: "linger"})
	r.wait(t, "linger", fsm.Deleted, 3, 10*time.Second)
	if list := instances(t, p); len(list) != 0 {
		t.Fatalf("containers left: %+v", list)
	}
	if p.Host().VolumeExists("linger") {
		t.Fatal("volume left")
	}
}
