package worker_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/internal/testenv"
)

// The worker's consumer deleted under its waiting pull (an operator's `nats
// consumer rm`, a reset), then made again by another serve's Open, or by no
// one: the server ends the pull for good (409 Consumer Deleted). The worker
// binds the consumer again, or makes it, and provisioning goes on. Before,
// its pull loop just ended: on a single serve nothing was provisioned again
// until a restart.
func TestConsumerDeletedWhilePulled(t *testing.T) {
	for _, remade := range []bool{true, false} {
		t.Run(fmt.Sprintf("remade=%v", remade), func(t *testing.T) {
			p := newSim(t, 0, time.Millisecond)
			r := newRig(t, p, rigOptions{})
			r.send(t, fsm.Command{Type: fsm.Create, Workspace: "before"})
			r.wait(t, "before", fsm.Running, 1, 10*time.Second)

			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			stream := events.NewNames("").EventStream()
			cons, err := r.core.JS.Consumer(ctx, stream, "turnstile-worker")
			if err != nil {
				t.Fatal(err)
			}
			testenv.Eventually(t, 10*time.Second, "the worker's pull waiting at the server", func() bool {
				info, err := cons.Info(ctx)
				return err == nil && info.NumWaiting > 0
			})
			cfg := cons.CachedInfo().Config
			if err := r.core.JS.DeleteConsumer(ctx, stream, cfg.Durable); err != nil {
				t.Fatal(err)
			}
			if remade {
				if _, err := r.core.JS.CreateOrUpdateConsumer(ctx, stream, cfg); err != nil {
					t.Fatal(err)
				}
			}

			r.send(t, fsm.Command{Type: fsm.Create, Workspace: "after"})
			r.wait(t, "after", fsm.Running, 1, 20*time.Second)
			// The events delivered again by a consumer made again change
			// nothing: the first workspace still runs its one container.
			r.wait(t, "before", fsm.Running, 1, time.Second)
			if n := len(instances(t, p)); n != 2 {
				t.Fatalf("%d containers, want 2", n)
			}
		})
	}
}
