package engine_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/internal/testenv"
)

// A partition's consumer deleted under the engine's waiting pull (an
// operator's `nats consumer rm`, a reset), then made again by another
// serve's Open, or by no one: the server ends the pull for good (409
// Consumer Deleted). The engine takes the partition afresh, and its
// commands, those in hand or queued when the consumer went and those sent
// after, all get their outcomes, in the order they were stored, well within
// the ack wait. Before, the pull loop just ended and the partition stayed
// owned and unpulled: every later command of it waited forever.
func TestConsumerDeletedWhilePulled(t *testing.T) {
	for _, remade := range []bool{true, false} {
		t.Run(fmt.Sprintf("remade=%v", remade), func(t *testing.T) {
			core := testenv.StartCore(t, testenv.CoreOptions{})
			cl := core.Client(t, "t")
			const ws = "deleted"
			send(t, cl, fsm.Command{Type: fsm.Create, Workspace: ws})
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			var ids []string
			publish := func(n int) {
				for i := range n {
					c, err := cl.Publish(ctx, fsm.Command{Type: fsm.Configure, Workspace: ws,
						Spec: &fsm.Spec{Env: map[string]string{"N": fmt.Sprint(len(ids), i)}}})
					if err != nil {
						t.Fatal(err)
					}
					ids = append(ids, c.ID)
				}
			}

			cons := partConsumer(t, core.JS, ws)
			cfg := cons.CachedInfo().Config
			publish(50) // in hand or queued when the consumer goes
			testenv.Eventually(t, 10*time.Second, "the engine's pull waiting at the server", func() bool {
				info, err := cons.Info(ctx)
				return err == nil && info.NumWaiting > 0
			})
			names := events.NewNames("")
			if err := core.JS.DeleteConsumer(ctx, names.CommandStream(), cfg.Durable); err != nil {
				t.Fatal(err)
			}
			if remade {
				// The engine may make it again first, and one made while
				// the server still removes the deleted one's directory
				// cannot be written (500) until the engine, which checks,
				// has deleted and made it again: what another serve's Open
				// would meet as well. The engine's retakes of a partition
				// are 5 s apart, and a loaded host may need two.
				testenv.Eventually(t, 30*time.Second, "the consumer made again", func() bool {
					_, err := core.JS.CreateOrUpdateConsumer(ctx, names.CommandStream(), cfg)
					return err == nil
				})
			}
			publish(50)
			last, err := cl.Publish(ctx, fsm.Command{Type: fsm.Stop, Workspace: ws})
			if err != nil {
				t.Fatal(err)
			}
			ids = append(ids, last.ID)

			// Under the ack wait (30 s): no redelivery of the old consumer's
			// is what brings them.
			wctx, wcancel := context.WithTimeout(ctx, 25*time.Second)
			defer wcancel()
			if _, err := cl.Outcome(wctx, last.ID); err != nil {
				t.Fatalf("the last command of the partition whose consumer was deleted got no outcome: %v (partitions pulled: %v)",
					err, core.Engines[0].Partitions())
			}
			testenv.Eventually(t, 20*time.Second, "every command handled", func() bool { return consumerDone(core) })
			got := eventCommands(t, core, ws)[1:] // after the create
			if !slices.Equal(got, ids) {
				t.Fatalf("events of commands %v, want %v: lost, doubled or out of order", got, ids)
			}
			checkLog(t, core)
			k, _ := names.PartitionOf(cfg.FilterSubject)
			if !slices.Contains(core.Engines[0].Partitions(), k) {
				t.Fatalf("partition %d is not pulled again: %v", k, core.Engines[0].Partitions())
			}
		})
	}
}
