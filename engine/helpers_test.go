package engine_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/turnstile-dev/turnstile/audit"
	"github.com/turnstile-dev/turnstile/client"
	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/internal/testenv"
)

// provisioner answers every in-flight state with success for its
// generation, the way the worker would, until the test ends.
type provisioner struct {
	cancel context.CancelFunc
	done   chan struct{}
	// fail, if set, chooses to fail an attempt instead.
	fail func(fsm.Workspace) bool
}

func startProvisioner(t *testing.T, core *testenv.Core, fail func(fsm.Workspace) bool) *provisioner {
	t.Helper()
	cl := core.SystemClient(t, "provisioner")
	ctx, cancel := context.WithCancel(context.Background())
	p := &provisioner{cancel: cancel, done: make(chan struct{}), fail: fail}
	var wg sync.WaitGroup
	go func() {
		defer close(p.done)
		defer wg.Wait()
		_ = core.Store.Subscribe(ctx, 1, func(r events.Record) error {
			if r.Event == nil {
				return nil
			}
			st := r.Event.State
			var cmd fsm.Command
			switch st.Status {
			case fsm.Provisioning:
				cmd = fsm.Command{Type: fsm.ProvisionSucceeded}
				if p.fail != nil && p.fail(st) {
					cmd = fsm.Command{Type: fsm.ProvisionFailed, Reason: "simulated failure"}
				}
			case fsm.Stopping:
				cmd = fsm.Command{Type: fsm.StopSucceeded}
			case fsm.Deleting:
				cmd = fsm.Command{Type: fsm.DeleteSucceeded}
			default:
				return nil
			}
			cmd.Workspace, cmd.Generation = st.ID, st.Generation
			wg.Go(func() {
				if _, err := cl.Send(ctx, cmd); err != nil && ctx.Err() == nil {
					t.Errorf("provisioner: %v", err)
				}
			})
			return nil
		})
	}()
	t.Cleanup(p.stop)
	return p
}

func (p *provisioner) stop() {
	p.cancel()
	<-p.done
}

// quiesce stops the provisioner and waits until the engines have handled
// every command, so that the log can be audited as a whole: a command being
// written while the audit reads would look like an event without outcome.
func quiesce(t *testing.T, core *testenv.Core, p *provisioner) {
	t.Helper()
	p.stop()
	testenv.Eventually(t, 30*time.Second, "the engines to handle every command", func() bool { return consumerDone(core) })
}

// checkLog verifies the whole event stream: every command has exactly one
// outcome, accepted outcomes and events match one to one, and every
// workspace's history replays legally. It returns the final states.
func checkLog(t *testing.T, core *testenv.Core) (map[string]fsm.Workspace, map[string]events.OutcomeRecord) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	outcomes := map[string]events.OutcomeRecord{}
	eventsByCmd := map[string]int{}
	replayers := map[string]*audit.Replayer{}
	err := core.Store.Replay(ctx, 1, 0, func(r events.Record) error {
		switch {
		case r.Unreadable != nil: // the engine never writes one
			t.Errorf("%v", r.Unreadable)
		case r.Outcome != nil:
			if _, dup := outcomes[r.Outcome.CommandID]; dup {
				t.Errorf("command %s has a second outcome at stream sequence %d", r.Outcome.CommandID, r.StreamSeq)
			}
			outcomes[r.Outcome.CommandID] = *r.Outcome
		case r.Event != nil:
			eventsByCmd[r.Event.CommandID]++
			rp := replayers[r.Event.Workspace]
			if rp == nil {
				rp = audit.NewReplayer(r.Event.Workspace)
				replayers[r.Event.Workspace] = rp
			}
			rp.Step(*r.Event)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("replay: %v", err)
	}
	states := map[string]fsm.Workspace{}
	for id, rp := range replayers {
		for _, v := range rp.Violations {
			t.Errorf("audit: %s", v)
		}
		states[id] = rp.State
	}
	for id, n := range eventsByCmd {
		if n != 1 {
			t.Errorf("command %s has %d events", id, n)
		}
		if o, ok := outcomes[id]; !ok || o.Outcome != fsm.Accepted {
			t.Errorf("command %s has an event but outcome %+v", id, o)
		}
	}
	for id, o := range outcomes {
		if o.Outcome == fsm.Accepted && eventsByCmd[id] != 1 {
			t.Errorf("command %s accepted but has %d events", id, eventsByCmd[id])
		}
	}
	return states, outcomes
}

func send(t *testing.T, cl *client.Client, cmd fsm.Command) events.OutcomeRecord {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	o, err := cl.Send(ctx, cmd)
	if err != nil {
		t.Fatalf("send %s %s: %v", cmd.Type, cmd.Workspace, err)
	}
	return o
}

func waitState(t *testing.T, core *testenv.Core, id string, want fsm.Status, gen uint64) fsm.Workspace {
	t.Helper()
	var last fsm.Workspace
	testenv.Eventually(t, 30*time.Second, id+" to reach "+string(want), func() bool {
		h, err := core.Store.Load(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		last = h.State
		return h.State.Status == want && (gen == 0 || h.State.Generation == gen)
	})
	return last
}

func isRejection(o events.OutcomeRecord, code fsm.Code) bool {
	return o.Outcome == fsm.Rejected && o.Rejection != nil && o.Rejection.Code == code
}

// partConsumer is the engine's consumer of workspace ws's partition on the
// command stream.
func partConsumer(t *testing.T, js jetstream.JetStream, ws string) jetstream.Consumer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	names := events.NewNames("")
	parts, err := events.ReadPartitions(ctx, js, names)
	if err != nil {
		t.Fatal(err)
	}
	c, err := js.Consumer(ctx, names.CommandStream(), events.EngineConsumer("turnstile-engine", events.Partition(ws, parts)))
	if err != nil {
		t.Fatal(err)
	}
	return c
}
