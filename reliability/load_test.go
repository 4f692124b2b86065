package reliability_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/turnstile-dev/turnstile/client"
	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/fsm"
)

// connect opens a NATS connection that reconnects forever: the server
// under test goes away and comes back on the same port.
func connect(t *testing.T, url, name string) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url, nats.Name(name), nats.MaxReconnects(-1), nats.Token(natsToken),
		nats.ReconnectWait(50*time.Millisecond), nats.RetryOnFailedConnect(true),
		nats.Timeout(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// newClient opens a client.Client on nc, retrying while the stream is not
// reachable yet.
func newClient(t *testing.T, nc *nats.Conn) *client.Client {
	t.Helper()
	var c *client.Client
	poll(t, time.Minute, 100*time.Millisecond, "a client to open", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var err error
		c, err = client.New(ctx, nc, client.Options{Actor: "reliability", PollInterval: 250 * time.Millisecond})
		return err == nil
	})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// sent is one command of the load and the outcome its sender was given.
type sent struct {
	cmd     fsm.Command
	outcome events.OutcomeRecord
}

// load sends random user commands over a set of workspaces, each command
// under one id that is resent after every transport error or missing
// outcome until an outcome arrives.
type load struct {
	t          *testing.T
	cl         *client.Client
	workspaces []string
	workers    int
	// pace, if set, is the pause of each worker between commands.
	pace time.Duration

	mu      sync.Mutex
	sent    map[string]*sent
	done    atomic.Int64 // commands with an outcome
	resends atomic.Int64 // sends after a transport error or timeout
	lost    atomic.Int64 // commands given up on at the deadline
}

func newLoad(t *testing.T, cl *client.Client, workspaces, workers int) *load {
	l := &load{t: t, cl: cl, workers: workers, sent: map[string]*sent{}}
	for i := range workspaces {
		l.workspaces = append(l.workspaces, fmt.Sprintf("ws-%04d", i))
	}
	return l
}

// command returns a random user command on a random workspace.
func (l *load) command(r *rand.Rand) fsm.Command {
	cmd := fsm.Command{ID: client.NewCommandID(), Workspace: l.workspaces[r.IntN(len(l.workspaces))]}
	switch p := r.IntN(100); {
	case p < 25:
		cmd.Type = fsm.Create
	case p < 35:
		cmd.Type = fsm.Start
	case p < 50:
		cmd.Type = fsm.Stop
	case p < 65:
		cmd.Type = fsm.Restart
	case p < 75:
		cmd.Type = fsm.Delete
	default:
		cmd.Type = fsm.Configure
		cmd.Spec = &fsm.Spec{Env: map[string]string{"N": fmt.Sprint(r.IntN(1000))}}
	}
	return cmd
}

// run sends commands while more(i) holds for the i-th command, from
// l.workers goroutines, and returns when all have an outcome or ctx ends.
func (l *load) run(ctx context.Context, seed uint64, more func(i int64) bool) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := range l.workers {
		r := rand.New(rand.NewPCG(seed, uint64(w)))
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if !more(i) || ctx.Err() != nil {
					return
				}
				l.send(ctx, l.command(r))
				if l.pace > 0 {
					time.Sleep(l.pace) // load shaping: a steady rate, not synchronization
				}
			}
		})
	}
	wg.Wait()
}

// send sends cmd until an outcome arrives, always with the same id.
func (l *load) send(ctx context.Context, cmd fsm.Command) {
	s := &sent{cmd: cmd}
	l.mu.Lock()
	l.sent[cmd.ID] = s
	l.mu.Unlock()
	for attempt := 0; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		o, err := l.cl.Send(actx, cmd)
		cancel()
		if err == nil {
			l.mu.Lock()
			s.outcome = o
			l.mu.Unlock()
			l.done.Add(1)
			return
		}
		var rej *fsm.Rejection
		if errors.As(err, &rej) {
			l.t.Errorf("command %s %s refused before publishing: %v", cmd.Type, cmd.Workspace, err)
			return
		}
		if ctx.Err() != nil {
			l.lost.Add(1)
			l.t.Errorf("command %s (%s %s) has no outcome at the deadline: %v", cmd.ID, cmd.Type, cmd.Workspace, err)
			return
		}
		l.resends.Add(1)
		time.Sleep(50 * time.Millisecond) // back off while the server is away
	}
}

// unanswered returns the ids of the commands sent that have no outcome yet.
func (l *load) unanswered() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for id, s := range l.sent {
		if s.outcome.Outcome == "" {
			out = append(out, id)
		}
	}
	return out
}

// answered reports whether every command of ids has an outcome.
func (l *load) answered(ids []string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, id := range ids {
		if l.sent[id].outcome.Outcome == "" {
			return false
		}
	}
	return true
}

// commands returns what was sent.
func (l *load) commands() map[string]sent {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string]sent, len(l.sent))
	for id, s := range l.sent {
		out[id] = *s
	}
	return out
}
