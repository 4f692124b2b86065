package read

import (
	"context"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/fsm"
)

// Waiter watches workspaces in the event store until a condition holds.
// It reads the store (one get-last-message per look) on a ticker and, when
// it has a NATS connection, also as soon as the workspace's event subject
// carries a new event.
type Waiter struct {
	Store *events.Store
	// NC, optional, wakes the waiter on new events.
	NC *nats.Conn
	// Poll is the ticker's interval; 0 means 250ms.
	Poll time.Duration
}

// Until returns the workspace's state once cond holds for it, or its last
// state and ctx's error when ctx ends first (a zero Head if it ends before
// the first look: UntilFrom keeps the state the caller has).
func (wt Waiter) Until(ctx context.Context, id string, cond func(fsm.Workspace) bool) (events.Head, error) {
	return wt.UntilFrom(ctx, id, events.Head{}, cond)
}

// UntilFrom is Until for a caller that has just loaded the workspace's
// head known: cond is checked on it first, so a wait whose ctx has already
// ended (a timeout of 0) still answers reached, and it is the state
// returned with ctx's error if ctx ends before another look succeeds.
func (wt Waiter) UntilFrom(ctx context.Context, id string, known events.Head, cond func(fsm.Workspace) bool) (events.Head, error) {
	if err := fsm.ValidateID(id); err != nil {
		return events.Head{}, err
	}
	if known.Last != nil && cond(known.State) {
		return known, nil
	}
	poll := wt.Poll
	if poll <= 0 {
		poll = 250 * time.Millisecond
	}
	wake := make(chan struct{}, 1)
	if wt.NC != nil {
		sub, err := wt.NC.Subscribe(wt.Store.Names().Event(id), func(*nats.Msg) {
			select {
			case wake <- struct{}{}:
			default:
			}
		})
		if err == nil {
			defer func() { _ = sub.Unsubscribe() }()
		}
	}
	t := time.NewTicker(poll)
	defer t.Stop()
	last := known
	for {
		h, err := wt.Store.Load(ctx, id)
		if err != nil {
			if ctx.Err() != nil {
				return last, ctx.Err()
			}
			return last, err
		}
		last = h
		if cond(h.State) {
			return h, nil
		}
		select {
		case <-ctx.Done():
			return last, ctx.Err()
		case <-t.C:
		case <-wake:
		}
	}
}

// Reached is the condition of /wait: the workspace is in state at
// generation gen or later (any generation when gen is 0).
func Reached(state fsm.Status, gen uint64) func(fsm.Workspace) bool {
	return func(w fsm.Workspace) bool { return w.Status == state && w.Generation >= gen }
}

// Settled is the condition of the CLI's --wait: the workspace has left its
// in-flight state at generation gen or later.
func Settled(gen uint64) func(fsm.Workspace) bool {
	return func(w fsm.Workspace) bool { return w.Generation >= gen && !w.Status.InFlight() }
}
