package engine

import (
	"context"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/fsm"
)

// A command whose id is a UUIDv7 (events.IDTime; client.NewCommandID makes
// them) carries the time it was made. That bounds when any other copy of
// it can have been decided, and so lets the engine skip the outcome check
// (a direct get per command, before the events) for a command that cannot
// have been decided before. The argument, with t the id's time and W the
// shorter of the command and event streams' duplicate windows:
//
//   - A copy is "unseen" if it carries Nats-Msg-Id, was stored within W/4
//     of t (either side), was not handled before (handledBefore), and its
//     event is sent within W/4 of its stored time (checked as it is sent,
//     events.Write.UnseenUntil, on a connection that is up; serve's commit
//     connection buffers nothing across a reconnect): its writes land by
//     about t + W/2.
//   - Every copy that stores anything was stored no earlier than t - W/4:
//     one dated further ahead is refused with nothing stored (aheadDated,
//     on every path that would store under the id: handle, refuse,
//     refuseBusy). So any other copy's event or outcome written before this
//     one's is less than 3W/4 older: the event stream refuses this one's
//     event by message id (an outcome without an event carries the command
//     id too). One written after it was checked (a copy with the header
//     is stored at least W apart from this one, so after t + 3W/4: not
//     unseen) and finds this one's outcome, or is refused by id likewise.
//   - This copy handled before without the engine knowing (a delivery
//     count that started again) wrote less than W/4 ago: refused by id.
//
// The margins (W/4) absorb clock skew between NATS servers and this
// process and a publish's time on the wire; W is the duplicate window as at
// open, and nothing is unseen while a stream's window differs from it.

// windowRecheck is how long the duplicate windows as last read are trusted.
const windowRecheck = 10 * time.Second

// dupWindow is W for unseen: the event stream's duplicate window as the
// store read it at open, as long as the command and event streams' windows,
// read again every windowRecheck (by one caller at a time), are both still
// that long. Once either is found changed (an operator edited a stream
// while serve runs; serve sets them back at start), or a read failed, it
// is 0 and nothing is unseen until a read finds them as at open again.
func (e *Engine) dupWindow(ctx context.Context) time.Duration {
	at := e.windowRead.Load()
	if time.Since(time.Unix(0, at)) >= windowRecheck && e.windowRead.CompareAndSwap(at, time.Now().UnixNano()) {
		rctx, cancel := context.WithTimeout(ctx, e.readLimit())
		w, err := e.store.ReadDuplicateWindows(rctx)
		cancel()
		if err != nil || w != e.store.DuplicateWindow() {
			w = 0
		}
		e.window.Store(int64(w))
	}
	return time.Duration(e.window.Load())
}

// unseen returns until when cmd, a user command delivered in a message
// with metadata md, cannot have been decided before (above) if its event
// is sent by then: stored time + W/4, when the id's time is within W/4 of
// the stored time; zero when it may have been.
func (e *Engine) unseen(ctx context.Context, cmd fsm.Command, md *jetstream.MsgMetadata, handledBefore, system, msgID bool) time.Time {
	if handledBefore || system || !msgID {
		return time.Time{}
	}
	t, ok := events.IDTime(cmd.ID)
	if !ok {
		return time.Time{}
	}
	w := e.dupWindow(ctx)
	if w <= 0 {
		return time.Time{}
	}
	until := md.Timestamp.Add(w / 4)
	if md.Timestamp.Sub(t).Abs() > w/4 || !e.cfg.Now().Before(until) {
		return time.Time{}
	}
	return until
}

// aheadDated returns a refusal for a user command whose id is a UUIDv7
// dated more than a quarter of the duplicate window after the message was
// stored (a sender's clock far ahead, or a forged id). Such a command is
// refused with nothing stored under its id: a copy sent again once the
// id's time has come would be unseen, and must find nothing decided.
// id is the id the caller would store under (the Nats-Msg-Id first).
func (e *Engine) aheadDated(id string, t fsm.CommandType, md *jetstream.MsgMetadata, system bool) *fsm.Rejection {
	if system {
		return nil
	}
	at, ok := events.IDTime(id)
	if !ok {
		return nil
	}
	// The window as at open, not as last read: a refusal must not turn
	// into a decision on a redelivery because a read changed W.
	w := e.store.DuplicateWindow()
	if ahead := at.Sub(md.Timestamp); ahead > w/4 {
		return fsm.Invalid(t, "command id %s is a UUIDv7 dated %v after the server stored the command (at most %v allowed): "+
			"the sender's clock is ahead; fix it, or use a random id (UUIDv4)", id, ahead.Round(time.Millisecond), w/4)
	}
	return nil
}

// refuseAhead answers a command aheadDated refused, without storing
// anything, and acks it. A copy handled before (recovered, redelivered)
// was counted then.
func (e *Engine) refuseAhead(m jetstream.Msg, md *jetstream.MsgMetadata, cmd fsm.Command, rej *fsm.Rejection, before bool) {
	e.log.Info("engine: command refused, not stored: its id is dated ahead", "command", cmd.ID, "workspace", cmd.Workspace, "reason", rej.Message)
	o := events.OutcomeRecord{
		CommandID: cmd.ID, Workspace: cmd.Workspace, CommandType: cmd.Type, Actor: cmd.Actor,
		Outcome: fsm.Rejected, Rejection: rej, Reason: "id dated ahead; not stored",
		ReceivedAt: md.Timestamp.UTC(), DecidedAt: e.cfg.Now().UTC(),
	}
	if before {
		e.settle(m, o)
		return
	}
	e.finish(m, o, md)
}
