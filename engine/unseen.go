package engine

import (
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/fsm"
)

// A command whose id is a UUIDv7 (events.IDTime; client.NewCommandID makes
// them) carries the time it was made. That bounds when any other copy of
// it can have been stored, and so lets the engine skip the outcome check
// (a direct get per command, before the events) for a command that cannot
// have been decided before. The argument, with W the duplicate window
// (the command and event streams have the same):
//
//   - A copy is "unseen" if it was stored at most W/4 before and at most W/2
//     after its id's time, was not handled before (handledBefore), and is
//     handled at most W/2 after it was stored.
//   - Another stored copy of the id is at least W apart from it (the
//     command stream refuses a message id within W of the last). A later
//     one is then stored more than W/2 after the id's time: not unseen, so
//     it is checked and finds this one's outcome. An earlier one was stored
//     at least W/2 before the id's time: dated ahead, and refused with
//     nothing stored (aheadDated).
//   - This copy handled before (a delivery count that started again, a
//     consumer made again) stored its event or outcome after it was
//     stored, so within W of now: the event stream refuses a second one by
//     message id (events.Write.Unseen).
//
// The margins (W/4 between the bounds and the window) absorb clock skew
// between NATS servers and this process.

// unseen reports whether cmd, a user command delivered in a message with
// metadata md, cannot have been decided before (above): its write may skip
// the outcome check.
func (e *Engine) unseen(cmd fsm.Command, md *jetstream.MsgMetadata, handledBefore, system, msgID bool) bool {
	if handledBefore || system || !msgID {
		return false
	}
	t, ok := events.IDTime(cmd.ID)
	if !ok {
		return false
	}
	w := e.store.DuplicateWindow()
	if w <= 0 {
		return false
	}
	lag := md.Timestamp.Sub(t)
	return lag >= -w/4 && lag <= w/2 && e.cfg.Now().Sub(md.Timestamp) <= w/2
}

// aheadDated returns a refusal for a user command whose id is a UUIDv7
// dated more than a quarter of the duplicate window after the command was
// stored (a sender's clock far ahead, or a forged id). Such a command is
// refused with nothing stored (not even its outcome): a copy of the id
// sent again once the id's time has come would be unseen, and must find
// nothing decided under it.
func (e *Engine) aheadDated(cmd fsm.Command, md *jetstream.MsgMetadata, system bool) *fsm.Rejection {
	if system {
		return nil
	}
	t, ok := events.IDTime(cmd.ID)
	if !ok {
		return nil
	}
	w := e.store.DuplicateWindow()
	if ahead := t.Sub(md.Timestamp); w > 0 && ahead > w/4 {
		return fsm.Invalid(cmd.Type, "command id %s is a UUIDv7 dated %v after the server stored the command (at most %v allowed): "+
			"the sender's clock is ahead; fix it, or use a random id (UUIDv4)", cmd.ID, ahead.Round(time.Millisecond), w/4)
	}
	return nil
}

// refuseAhead answers a command aheadDated refused, without storing
// anything, and acks it.
func (e *Engine) refuseAhead(m jetstream.Msg, md *jetstream.MsgMetadata, cmd fsm.Command, rej *fsm.Rejection) {
	e.log.Info("engine: command refused, not stored: its id is dated ahead", "command", cmd.ID, "workspace", cmd.Workspace, "reason", rej.Message)
	o := events.OutcomeRecord{
		CommandID: cmd.ID, Workspace: cmd.Workspace, CommandType: cmd.Type, Actor: cmd.Actor,
		Outcome: fsm.Rejected, Rejection: rej, Reason: "id dated ahead; not stored",
		ReceivedAt: md.Timestamp.UTC(), DecidedAt: e.cfg.Now().UTC(),
	}
	e.finish(m, o, md)
}
