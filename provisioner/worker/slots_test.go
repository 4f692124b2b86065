package worker_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/internal/testenv"
	"github.com/turnstile-dev/turnstile/provisioner"
	"github.com/turnstile-dev/turnstile/provisioner/worker"
)

// At most MaxConcurrentActions actions run on the provisioner at once; the
// others wait for a slot, and a newer generation cancels a waiting action
// as it does a running one, without waiting for a slot itself first.
func TestMaxConcurrentActions(t *testing.T) {
	p := newSim(t, 0, time.Millisecond)
	m := worker.NewMetrics(nil)
	r := newRig(t, p, rigOptions{maxActions: 2, metrics: m})
	gauge := func() (running, waiting int) {
		return int(testutil.ToFloat64(m.Running)), int(testutil.ToFloat64(m.Waiting))
	}
	abandoned := func() int { return int(testutil.ToFloat64(m.Actions.WithLabelValues("provision", "abandoned"))) }

	// Provisions that never get ready hold their slots.
	ids := []string{"slot-a", "slot-b", "slot-c", "slot-d"}
	for _, id := range ids {
		r.send(t, fsm.Command{Type: fsm.Create, Workspace: id, Spec: &fsm.Spec{Env: map[string]string{"AGENT_START_DELAY": "1h"}}})
	}
	testenv.Eventually(t, 10*time.Second, "two provisions running and two waiting", func() bool {
		list := instances(t, p)
		if len(list) > 2 {
			t.Fatalf("%d provisions reached the provisioner at once, bound 2: %+v", len(list), list)
		}
		running, waiting := gauge()
		return len(list) == 2 && running == 2 && waiting == 2
	})
	var active, queued []string
	for _, id := range ids {
		if _, err := p.Inspect(context.Background(), id); err == nil {
			active = append(active, id)
		} else {
			queued = append(queued, id)
		}
	}

	// Stopping a workspace whose provision waits cancels that provision
	// while both slots stay taken; its stop waits in its place.
	for i, id := range queued {
		r.send(t, fsm.Command{Type: fsm.Stop, Workspace: id})
		// The stop takes the abandoned provision's place in the queue a
		// moment after the abandon is counted: wait for both.
		testenv.Eventually(t, 10*time.Second, "the waiting provision of "+id+" to be abandoned, with 2 actions running and 2 waiting", func() bool {
			running, waiting := gauge()
			return abandoned() == i+1 && running == 2 && waiting == 2
		})
	}

	// Freeing the slots lets every stop through.
	for _, id := range active {
		r.send(t, fsm.Command{Type: fsm.Stop, Workspace: id})
	}
	for _, id := range ids {
		r.wait(t, id, fsm.Stopped, 2, 10*time.Second)
	}
	for _, id := range queued {
		if _, err := p.Inspect(context.Background(), id); !errors.Is(err, provisioner.ErrNotFound) {
			t.Errorf("%s, whose provision was cancelled while waiting, has a container (%v)", id, err)
		}
	}
	testenv.Eventually(t, 10*time.Second, "no action running or waiting", func() bool {
		running, waiting := gauge()
		return running == 0 && waiting == 0
	})
}
