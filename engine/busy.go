package engine

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/internal/retry"
)

// DefaultMaxPendingPerWorkspace is Config.MaxPendingPerWorkspace's
// default: far more than any honest client queues for one workspace, far
// fewer than the consumer's MaxAckPending, so a flood of one workspace
// leaves room for everyone else's commands.
const DefaultMaxPendingPerWorkspace = 1000

// refusalsInFlight bounds the busy refusals being written at once: enough
// to keep the server busy (measured: 30,000 refusals in about a second
// on a 2-core machine), few enough to bound the goroutines of a flood.
const refusalsInFlight = 512

// overflow deals with a command pulled while its workspace already has
// MaxPendingPerWorkspace commands waiting. A user command is refused busy
// without being decided: its outcome says why, no event is written, and it
// is acked as soon as that is stored, so it holds none of the consumer's
// MaxAckPending behind the flood. System reports are queued regardless:
// refusing one would leave an attempt unanswered. So are commands that may
// have been handled already (queue.offer): only first deliveries come here.
//
// Called by pull, in stream order; the refusal itself is written in the
// background (at most cap(e.refusing) at once), so the pull moves on to
// other workspaces' commands.
func (e *Engine) overflow(ctx context.Context, ws string, m jetstream.Msg) {
	// Keyed on the subject, not the body: only serve's own parts can
	// publish on the system subjects, while anyone may write a system
	// type into a user command.
	if e.names.IsSystem(m.Subject()) {
		e.queue.push(ws, m)
		return
	}
	cmd, err := events.DecodeCommand(m.Data(), ws)
	select {
	case e.refusing <- struct{}{}:
	case <-ctx.Done():
		_ = m.Nak()
		return
	}
	e.wg.Go(func() {
		defer func() { <-e.refusing }()
		e.refuseBusy(ctx, m, ws, cmd, err)
		if ctx.Err() != nil {
			_ = m.Nak() // handed back unless settled (then a no-op)
		}
	})
}

// refuseBusy stores a busy rejection for m and acks it; a command that
// cannot be read is refused as invalid instead, as handle would. A command
// whose event is its workspace's newest is not refused but handed back
// (appliedAlready).
func (e *Engine) refuseBusy(ctx context.Context, m jetstream.Msg, ws string, cmd fsm.Command, decodeErr error) {
	md, err := m.Metadata()
	if err != nil {
		e.log.Error("engine: command without metadata; terminating it", "subject", m.Subject(), "err", err)
		_ = m.Term()
		return
	}
	if decodeErr == nil {
		if id := m.Headers().Get(jetstream.MsgIDHeader); id != "" && id != cmd.ID {
			decodeErr = fsm.Invalid(cmd.Type, "Nats-Msg-Id header %s differs from the command id %s: they must be equal",
				events.QuoteInput(id), events.QuoteInput(cmd.ID))
		}
	}
	if decodeErr == nil {
		// As handle does: a system type or a reserved id on a user
		// subject is refused invalid, under an id of its own.
		decodeErr = e.checkSource(m, false, cmd)
	}
	if decodeErr != nil {
		e.refuse(ctx, m, md, ws, false, cmd, decodeErr)
		return
	}
	if rej := e.aheadDated(cmd.ID, cmd.Type, md, false); rej != nil {
		// Nothing may be stored under its id (unseen.go), not even "busy".
		e.refuseAhead(m, md, cmd, rej, e.handledBefore(false, md, m.Subject()))
		return
	}
	if md.NumDelivered > 1 || m.Headers().Get(jetstream.MsgIDHeader) == "" {
		// Perhaps decided before (a lost ack): keep the outcome it had.
		o, ok, err := e.store.Outcome(ctx, cmd.ID)
		if err == nil && ok {
			e.settle(m, o)
			return
		}
		if errors.Is(err, events.ErrMalformed) {
			e.dropUnreadable(m, cmd.ID, ws, err)
			return
		}
	}
	limit := e.cfg.MaxPendingPerWorkspace
	o := events.OutcomeRecord{
		CommandID: cmd.ID, Workspace: ws, CommandType: cmd.Type, Actor: cmd.Actor, Outcome: fsm.Rejected,
		Rejection: &fsm.Rejection{Code: fsm.CodeBusy, Command: cmd.Type, Allowed: []fsm.CommandType{},
			Message: fmt.Sprintf("workspace %s already has %d commands waiting, the most the engine queues for one workspace: "+
				"%s was refused without being decided; retry once they are handled", ws, limit, cmd.Type)},
		Reason:     "overflow",
		ReceivedAt: md.Timestamp.UTC(), DecidedAt: e.cfg.Now().UTC(),
	}
	// Not through the committer: a refusal goes with no event, so it
	// needs no atomic batch, and many published at once (one per
	// goroutine, up to cap(e.refusing)) are written several times faster
	// than batches; on the committers' connection, not the consumer's
	// (the head read before it too).
	store := e.store
	if n := len(e.cfg.CommitStores); n > 0 {
		store = e.cfg.CommitStores[0]
	}
	for attempt := 0; ; attempt++ {
		applied, err := appliedAlready(ctx, store, cmd.Workspace, cmd.ID)
		if err == nil && applied {
			e.log.Info("engine: a command beyond its workspace's limit has its event stored already; handed back to record its outcome",
				"command", cmd.ID, "workspace", ws)
			_ = m.Nak()
			return
		}
		res := []events.Written{{Err: err}}
		if err == nil {
			res, _ = store.Commit(ctx, []events.Write{{Outcome: o}}, events.CommitOptions{})
		}
		switch {
		case res[0].Err == nil && res[0].Existing != nil:
			// Decided meanwhile (a racing handling of the same command).
			e.settle(m, *res[0].Existing)
			return
		case res[0].Err == nil:
			if e.cfg.Metrics != nil {
				e.cfg.Metrics.Overflows.Inc()
			}
			e.finish(m, o, md)
			return
		case errors.Is(res[0].Err, events.ErrOutcomeUnreadable):
			e.dropUnreadable(m, cmd.ID, ws, res[0].Err)
			return
		case errors.Is(res[0].Err, events.ErrEventStored):
			// The refusal was refused by id: the command's event is
			// stored, behind later ones. Handed back, as above.
			e.log.Info("engine: a command beyond its workspace's limit has its event stored already; handed back to record its outcome",
				"command", cmd.ID, "workspace", ws)
			_ = m.Nak()
			return
		}
		if ctx.Err() != nil || retry.Sleep(ctx, retryDelay(attempt)) != nil {
			return
		}
	}
}

// appliedAlready reports whether command id's event is workspace ws's
// newest: the command was decided before, by a handling that may not have
// stored its outcome yet (it stopped between the two writes, or is between
// them now). Even a first delivery can be such a command: a NATS server
// that comes back with its consumer's state from before a crash delivers
// a command an engine had taken as if for the first time, and a command id
// sent again past the command stream's duplicate window is a new message.
// A busy outcome stored then would stand beside the event for good (a
// command has one outcome) and be the one that handling gets back. Handed
// back instead, the command comes again as a redelivery, which is queued
// past the limit (queue.offer), and handle records the accepted outcome
// its event had (or finds the one stored meanwhile).
//
// Such an event behind later ones is not looked for (finding it costs a
// read of the workspace's events since, too much for every refusal of a
// flood); within the duplicate window the refusal, whose message id is the
// command id, is refused by the event's (events.ErrEventStored) and the
// command handed back all the same. Not covered: such an event older than
// the window, and
// one stored after this read by a handling of the same command in flight
// elsewhere at that moment (an outcome cannot be stored on condition of the
// workspace's head).
func appliedAlready(ctx context.Context, store *events.Store, ws, id string) (bool, error) {
	head, err := store.Load(ctx, ws)
	if err != nil {
		return false, err
	}
	return head.Last != nil && head.Last.CommandID == id, nil
}
