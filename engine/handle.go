package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/internal/retry"
	"github.com/turnstile-dev/turnstile/internal/textcut"
)

// handle takes one command to its recorded outcome and acks it. It returns
// without acking only when the engine stops, so the command is redelivered.
// recovered: m is a recovered copy (see job), handled as a redelivery.
// recovered: a recovered copy, or a delivery of a command this engine
// queued one of (job.again).
func (e *Engine) handle(ctx context.Context, m jetstream.Msg, recovered bool) {
	md, err := m.Metadata()
	if err != nil {
		e.log.Error("engine: command without metadata; terminating it", "subject", m.Subject(), "err", err)
		_ = m.Term()
		return
	}
	ws := e.names.WorkspaceOf(m.Subject())
	system := e.names.IsSystem(m.Subject())
	cmd, err := events.DecodeCommand(m.Data(), ws)
	if err == nil {
		if id := m.Headers().Get(jetstream.MsgIDHeader); id != "" && id != cmd.ID {
			err = fsm.Invalid(cmd.Type, "Nats-Msg-Id header %s differs from the command id %s: they must be equal",
				events.QuoteInput(id), events.QuoteInput(cmd.ID))
		}
	}
	if err == nil {
		err = e.checkSource(m, system, cmd)
	}
	if err != nil {
		e.refuse(ctx, m, md, ws, system, cmd, err)
		return
	}
	if recovered || md.NumDelivered > 1 || m.Headers().Get(jetstream.MsgIDHeader) == "" {
		// A redelivery, or a message the stream could not dedupe (no
		// Nats-Msg-Id): if the outcome is stored, the command is done.
		o, ok, err := e.store.Outcome(ctx, cmd.ID)
		if err == nil && ok {
			e.checkReport(cmd, o)
			e.settle(m, o)
			return
		}
		if errors.Is(err, events.ErrMalformed) {
			e.dropUnreadable(m, cmd.ID, ws, err)
			return
		}
	}
	again := e.handledBefore(recovered, md, m.Subject())
	if rej := e.aheadDated(cmd.ID, cmd.Type, md, system); rej != nil {
		e.refuseAhead(m, md, cmd, rej, again)
		return
	}
	msgID := m.Headers().Get(jetstream.MsgIDHeader) != ""
	var look lookup
	for attempt := 0; ; attempt++ {
		if ctx.Err() != nil {
			return
		}
		// Checked each try: the last bound is on how long it has waited.
		look.unseenUntil = time.Time{}
		if !look.stored {
			look.unseenUntil = e.unseen(ctx, cmd, md, again, system, msgID)
		}
		if again && look.since.IsZero() && e.cfg.Now().Sub(md.Timestamp) >= e.store.DuplicateWindow()-findEventSkew {
			// Too old (by now: retries take time) for the duplicate
			// window to catch its event for sure: look first.
			look.since = md.Timestamp.Add(-findEventSkew)
		}
		o, err := e.decideAndCommit(ctx, cmd, md, again, look)
		switch {
		case err == nil:
			e.checkReport(cmd, o)
			e.finish(m, o, md)
			return
		case errors.Is(err, events.ErrEventStored):
			// Decided before, and the workspace moved on since: find that
			// event, and never decide again. It is in the duplicate window,
			// so stored no earlier than the window's length ago (plus the
			// clocks' skew): a command id sent again in a new message may
			// be older than its message.
			if !look.stored {
				look.storedAt = e.cfg.Now()
			}
			look.stored = true
			since := md.Timestamp
			if w := e.cfg.Now().Add(-e.store.DuplicateWindow()); w.Before(since) {
				since = w
			}
			look.since = since.Add(-findEventSkew)
			continue
		case errors.Is(err, errEventNotFound) && e.cfg.Now().Sub(look.storedAt) > e.store.DuplicateWindow():
			// The message whose id refused this command's event has left
			// the duplicate window (it was stored before storedAt; elapsed
			// time, so no clocks' skew), and no event of the command is among
			// its workspace's events since before it was stored (FindEvent
			// asks the leader): it was not this command's event but a
			// foreign message under its id (written by something other
			// than an engine). Waiting for an event that does not exist
			// would hold the workspace for ever; the window no longer
			// refuses the id, so decide it now.
			e.log.Warn("engine: a message that is not this command's event refused it by id; deciding it now that the duplicate window has passed",
				"command", cmd.ID, "workspace", ws)
			look.stored, look.storedAt = false, time.Time{}
			continue
		case errors.Is(err, events.ErrOutcomeUnreadable):
			e.dropUnreadable(m, cmd.ID, ws, err)
			return
		case errors.Is(err, events.ErrConflict):
			if e.cfg.Metrics != nil {
				e.cfg.Metrics.Conflicts.Inc()
			}
			continue // another writer appended: reload and decide again
		case ctx.Err() != nil:
			return
		default:
			// Keep this workspace's order: retry here rather than nak and
			// let a later command overtake this one. Tell the server the
			// command is in hand, so that it is not redelivered meanwhile
			// (here a wasted lookup, to another engine a command handled
			// beside this one).
			e.log.Warn("engine: command not recorded yet; retrying", "command", cmd.ID, "workspace", ws, "attempt", attempt, "err", err)
			_ = m.InProgress()
			if retry.Sleep(ctx, min(retryDelay(attempt), e.cfg.AckWait/2)) != nil {
				return
			}
		}
	}
}

// handledBefore reports whether a command may have been handled by an
// engine before (its event stored, its outcome perhaps not): a recovered
// copy, a redelivery, or one stored before this engine took its partition.
// The last because a delivery count can start again: a NATS server killed
// with serve may come back with its consumer's state from before the crash
// and deliver a command an engine had taken as if for the first time.
// "Stored before" is by stream sequence: the stream's last sequence read
// when the partition was taken, so no clock is involved. Where that is not
// known, by time: stored before the engine opened, plus openSkew.
func (e *Engine) handledBefore(recovered bool, md *jetstream.MsgMetadata, subject string) bool {
	if recovered || md.NumDelivered > 1 {
		return true
	}
	if k, ok := e.names.PartitionOf(subject); ok && e.own != nil {
		if last, ok := e.own.takenThrough(k, md.Stream); ok {
			return md.Sequence.Stream <= last
		}
	}
	return md.Timestamp.Before(e.opened.Add(openSkew))
}

// openSkew allows for the server's clock running ahead of this process's.
const openSkew = 5 * time.Second

// findEventSkew is how far before a command's stored time its event is
// looked for: the command and event streams' leaders may be different
// servers, whose clocks may differ, and this process's clock may differ
// from theirs.
const findEventSkew = time.Minute

// lookup says whether decideAndCommit looks for a handled-before command's
// event behind the head (FindEvent: a read of the workspace's events since).
type lookup struct {
	// since, unless zero, is where to look from, before deciding. Zero
	// looks only where the decision would write no event (a no-op,
	// rejection or stale report stored beside the command's own event);
	// an accepted one is left to the event stream's duplicate window,
	// which refuses the command's second event (events.ErrEventStored),
	// after which the caller looks.
	since time.Time
	// stored: the command's event is known to be stored (ErrEventStored).
	// Not found, the command is not decided again until the duplicate
	// window has passed since storedAt, when it was learned.
	stored   bool
	storedAt time.Time
	// unseenUntil: if its event goes out before then, the command cannot
	// have been decided before (unseen.go): its write skips the outcome
	// check.
	unseenUntil time.Time
}

// errEventNotFound: the command's event is stored (its id was refused as a
// duplicate) but was not found among its workspace's events.
var errEventNotFound = errors.New("the command's event is stored but not among its workspace's events since the duplicate window began")

// decide is fsm.Decide, with the installation's judgement of the spec an
// accepted create or configure records (Config.AdmitSpec) on a command's
// first handling only (again false). Handled before, the command may be in
// another engine's hands right now, under another serve's policy (flags,
// default image, a release before admission): that one, on its first
// handling, writes event and outcome one after the other, and a bare
// rejection stored here between the two would stand beside its event.
// Decided by the lifecycle alone, the two agree; a spec the policy refuses
// then fails at provisioning, where the provisioner judges it again. The
// converse is fenced: a first handling's rejection is stored alone, and a
// handling again writes its event only with its outcome, atomically,
// which the stored outcome refuses.
func (e *Engine) decide(w fsm.Workspace, cmd fsm.Command, again bool) fsm.Decision {
	d := fsm.Decide(w, cmd)
	if again || d.Outcome != fsm.Accepted || d.Event.Spec == nil || e.cfg.AdmitSpec == nil {
		return d
	}
	if err := e.cfg.AdmitSpec(*d.Event.Spec); err != nil {
		return fsm.Refuse(w, cmd.Type, err.Error())
	}
	return d
}

// decideAndCommit loads the workspace, decides, and stores event and
// outcome. again: the command was handled before (a redelivery or a
// recovered copy), so its event may be stored without its outcome; look
// says how to find that event.
func (e *Engine) decideAndCommit(ctx context.Context, cmd fsm.Command, md *jetstream.MsgMetadata, again bool, look lookup) (events.OutcomeRecord, error) {
	head, cached := e.heads.get(cmd.Workspace)
	if cached {
		// The cache is only safe where a compare-and-set checks it: an
		// accepted command's append. A no-op, rejection or stale outcome
		// writes no event, so it is decided on a fresh load.
		if e.decide(head.State, cmd, again).Outcome != fsm.Accepted {
			cached = false
		}
	}
	if !cached {
		var err error
		if head, err = e.store.Load(ctx, cmd.Workspace); err != nil {
			return events.OutcomeRecord{}, err
		}
	}
	o := events.OutcomeRecord{
		CommandID: cmd.ID, Workspace: cmd.Workspace, CommandType: cmd.Type, Actor: cmd.Actor,
		Generation: head.State.Generation, State: head.State.Status, CommandGeneration: cmd.Generation,
		ReceivedAt: md.Timestamp.UTC(), DecidedAt: e.cfg.Now().UTC(),
	}
	// Handled before, the command may be in another engine's hands right
	// now (a recovered copy of one still in flight there, or a redelivery
	// to a slow engine): its event goes with its outcome, atomically, so
	// that the other engine's decision and this one cannot both stand.
	w := events.Write{Outcome: o, Atomic: again, UnseenUntil: look.unseenUntil}
	var earlier *events.Envelope // this command's event, stored before the head
	notHead := head.Last == nil || head.Last.CommandID != cmd.ID
	behind := (again || look.stored) && notHead
	if behind && look.since.IsZero() && e.decide(head.State, cmd, again).Outcome != fsm.Accepted {
		// Decided again it would store an outcome beside its own event,
		// with nothing to refuse it: look (since the command was stored,
		// less the clocks' skew).
		look.since = md.Timestamp.Add(-findEventSkew)
	}
	if behind && !look.since.IsZero() {
		// Handled before: its event may be stored without its outcome (a
		// crash between the two writes) and, with another engine at work
		// meanwhile, be no longer the head. Deciding it again would record
		// a second decision beside that event.
		env, ok, err := e.store.FindEvent(ctx, cmd.Workspace, cmd.ID, look.since)
		if err != nil {
			return events.OutcomeRecord{}, err
		}
		if ok {
			earlier = &env
		}
	}
	if earlier == nil && look.stored && notHead {
		// Its event is stored somewhere we did not find: an outcome stored
		// meanwhile (a command id reused by another workspace's command in
		// flight) settles it; else wait, rather than decide a second time.
		if stored, ok, err := e.store.Outcome(ctx, cmd.ID); errors.Is(err, events.ErrMalformed) {
			return events.OutcomeRecord{}, fmt.Errorf("command %s: %w: %w", cmd.ID, events.ErrOutcomeUnreadable, err)
		} else if err != nil {
			return events.OutcomeRecord{}, err
		} else if ok {
			return stored, nil
		}
		return events.OutcomeRecord{}, fmt.Errorf("command %s on %s: %w", cmd.ID, cmd.Workspace, errEventNotFound)
	}
	if last := head.Last; last != nil && last.CommandID == cmd.ID {
		// Our event is stored but its outcome may not be (a crash between
		// the two writes): record the outcome it had.
		w.Outcome.Outcome, w.Outcome.EventSeq = fsm.Accepted, last.Seq
	} else if earlier != nil {
		// The same, found behind later events: the outcome it had, with
		// the state that event produced.
		w.Outcome.Outcome, w.Outcome.EventSeq = fsm.Accepted, earlier.Seq
		w.Outcome.Generation, w.Outcome.State = earlier.State.Generation, earlier.State.Status
	} else {
		d := e.decide(head.State, cmd, again)
		w.Outcome.Outcome, w.Outcome.Rejection, w.Outcome.Reason = d.Outcome, d.Rejection, d.Reason
		if d.Outcome == fsm.Accepted {
			env := events.NewEnvelope(e.cfg.NewID(), head.State, *d.Event, cmd, e.cfg.Now())
			w.Event, w.Expected = &env, head.StreamSeq
			w.Outcome.EventSeq, w.Outcome.Generation, w.Outcome.State = env.Seq, env.State.Generation, env.State.Status
		}
	}
	res := e.commit.submit(ctx, w)
	if res.Err != nil {
		e.heads.drop(cmd.Workspace)
		return events.OutcomeRecord{}, res.Err
	}
	if res.Existing != nil {
		e.heads.drop(cmd.Workspace)
		return *res.Existing, nil
	}
	if res.Recorded != nil {
		// An earlier try's event was the head: the outcome recorded is
		// that event's, which this handling may have decided otherwise.
		e.heads.drop(cmd.Workspace)
		return *res.Recorded, nil
	}
	if w.Event != nil && !res.Duplicate {
		env := *w.Event
		env.StreamSeq = res.EventSeq
		e.heads.put(cmd.Workspace, events.Head{State: env.State, StreamSeq: res.EventSeq, Last: &env})
	} else if w.Event != nil {
		e.heads.drop(cmd.Workspace)
	}
	return w.Outcome, nil
}

// checkSource refuses a command type on the wrong subject: system reports
// are trusted only from <prefix>.sys.<ws>, which only serve's own parts can
// publish (issue 12 item 2), and user commands belong on <prefix>.cmd.<ws>.
// It also refuses a user command claiming the HTTP API's actor without the
// API's proof (events.ActorProofHeader): NATS users publish on the same
// subjects as the API.
func (e *Engine) checkSource(m jetstream.Msg, system bool, cmd fsm.Command) error {
	subject := m.Subject()
	switch {
	case !system && cmd.Type.IsSystem():
		return fsm.Invalid(cmd.Type, "%s is a system report, which Turnstile's own provisioner, supervisor and watcher send on %s: "+
			"it is not accepted on %s", cmd.Type, e.names.System(cmd.Workspace), subject)
	case system && !cmd.Type.IsSystem():
		return fsm.Invalid(cmd.Type, "%s is a user command: publish it on %s, not on the system report subject %s",
			cmd.Type, e.names.Command(cmd.Workspace), subject)
	case !system && fsm.IsAPIActor(cmd.Actor):
		md, err := m.Metadata()
		if err != nil {
			return fsm.Invalid(cmd.Type, "actor %q: %v", cmd.Actor, err)
		}
		if err := events.CheckActorProof(e.cfg.ActorKey, m.Headers().Get(events.ActorProofHeader), m.Data(),
			md.Timestamp, e.store.DuplicateWindow()); err != nil {
			return fsm.Invalid(cmd.Type, "actor %q is the HTTP API's, which only serve's API may send (%v); send the command through the API, or use an actor of your own",
				cmd.Actor, err)
		}
	}
	return nil
}

// checkReport alerts when a system report finds another command's outcome
// under its id (another workspace, generation or kind of report): the report was not
// decided, and nothing can be stored for it under that id. Report ids are
// in a namespace users cannot send (fsm.SystemIDPrefix) and reports travel
// on a stream users cannot write, so this means a misconfigured NATS or a
// bug; the sender (provisioner/worker) sees the same and reports again
// under another id.
func (e *Engine) checkReport(cmd fsm.Command, o events.OutcomeRecord) {
	if !cmd.Type.IsSystem() || o.Answers(cmd) {
		return
	}
	e.log.Error("engine: a system report's id holds another command's outcome; the report was not applied",
		"command", cmd.ID, "workspace", cmd.Workspace, "type", cmd.Type, "generation", cmd.Generation,
		"stored_workspace", o.Workspace, "stored_type", o.CommandType, "stored_generation", o.CommandGeneration, "stored_outcome", o.Outcome)
	if e.cfg.Metrics != nil {
		e.cfg.Metrics.ReportIDConflicts.Inc()
	}
}

// refuse records a rejection for a command that could not be read, under
// the best id it has: its own, the Nats-Msg-Id header, or one made from its
// stream sequence.
func (e *Engine) refuse(ctx context.Context, m jetstream.Msg, md *jetstream.MsgMetadata, ws string, system bool, cmd fsm.Command, err error) {
	var rej *fsm.Rejection
	if !errors.As(err, &rej) {
		rej = fsm.Invalid(cmd.Type, "%v", err)
	}
	// On the user command stream an id in the system namespace is never
	// used: the refusal must not take a report's outcome subject.
	validID := fsm.ValidateUserCommandID
	invalidID := fmt.Sprintf("%s%d", fsm.RefusalIDPrefix, md.Sequence.Stream)
	if system {
		validID, invalidID = fsm.ValidateCommandID, fmt.Sprintf("%ssys-%d", fsm.RefusalIDPrefix, md.Sequence.Stream)
	}
	// The Nats-Msg-Id, the key the stream dedupes on, comes first: a body
	// naming another command's id must not take that command's outcome.
	// A message with an unusable Nats-Msg-Id has no usable identity.
	id := m.Headers().Get(jetstream.MsgIDHeader)
	if id == "" {
		id = cmd.ID
	}
	if validID(id) != nil || e.aheadDated(id, cmd.Type, md, system) != nil {
		// Nothing may be stored under an id dated ahead (unseen.go).
		id = invalidID
	}
	if fsm.ValidateID(ws) != nil {
		ws = ""
	}
	t := cmd.Type
	if !t.Known() {
		t = ""
	}
	o := events.OutcomeRecord{
		CommandID: id, Workspace: ws, CommandType: t, Outcome: fsm.Rejected, Rejection: rej,
		ReceivedAt: md.Timestamp.UTC(), DecidedAt: e.cfg.Now().UTC(),
	}
	e.log.Info("engine: command refused", "command", id, "subject", m.Subject(), "reason", rej.Message)
	for attempt := 0; ; attempt++ {
		res := e.commit.submit(ctx, events.Write{Outcome: o})
		switch {
		case res.Err == nil && res.Existing != nil:
			// The id already had an outcome (a command sent under it
			// before, or a racing handling of this one): nothing was
			// stored now, so the sender gets the stored outcome, and
			// nothing is counted again.
			e.settle(m, *res.Existing)
			return
		case res.Err == nil:
			e.finish(m, o, md)
			return
		case errors.Is(res.Err, events.ErrOutcomeUnreadable):
			e.dropUnreadable(m, id, ws, res.Err)
			return
		case errors.Is(res.Err, events.ErrEventStored) && o.CommandID != invalidID:
			// The id is a command's whose event is stored (the refusal
			// was refused by its message id): it must not take that
			// command's outcome. Recorded under an id of its own.
			o.CommandID = invalidID
			continue
		}
		if ctx.Err() != nil || retry.Sleep(ctx, retryDelay(attempt)) != nil {
			return
		}
	}
}

// dropUnreadable acks, undecided, a command whose id already holds a
// stored outcome that cannot be decoded (too large or not an outcome:
// written by an older build, or forged). Nothing can be stored under the
// id (its outcome subject is taken), and retrying would hold the command's
// workspace and a handler for ever. No reply goes out, as there is no
// outcome to send: the sender's client, which falls back to the stored
// outcome, cannot read it either, and reports no outcome
// (client.ErrNoOutcome) when its wait ends. The command has to be sent
// again under a new id. It is not counted as handled.
func (e *Engine) dropUnreadable(m jetstream.Msg, id, ws string, err error) {
	e.log.Error("engine: the command id holds an outcome that cannot be read; the command is acked undecided and must be sent again under a new id",
		"command", id, "workspace", ws, "subject", m.Subject(), "err", err)
	if e.cfg.Metrics != nil {
		e.cfg.Metrics.UnreadableOutcomes.Inc()
	}
	if err := m.Ack(); err != nil {
		e.log.Warn("engine: ack", "command", id, "err", err)
	}
}

// finish sends the outcome to a waiting client (if it asked), acks, and
// counts the command as handled.
func (e *Engine) finish(m jetstream.Msg, o events.OutcomeRecord, md *jetstream.MsgMetadata) {
	e.settle(m, o)
	e.cfg.Metrics.observe(o.CommandType, o.Outcome, time.Since(md.Timestamp).Seconds())
}

// settle is finish for a redelivered command found done (by this engine
// from the stream after a restart, by another engine, or before a crash
// lost its ack): it was counted when it was decided.
func (e *Engine) settle(m jetstream.Msg, o events.OutcomeRecord) {
	if reply := m.Headers().Get(events.ReplyHeader); reply != "" {
		if e.replyAllowed(reply) {
			if b, err := events.EncodeOutcome(o); err == nil {
				// Best effort: the stored outcome is the truth; clients
				// fall back to reading it.
				_ = e.js.Conn().Publish(reply, b)
			}
		} else {
			// The sender chose the subject: publishing there would make
			// the engine write on its behalf where it may not (another
			// workspace's events, another part's inbox). Issue 12 item 4.
			level := slog.LevelDebug
			if !e.warnedReply.Swap(true) {
				level = slog.LevelWarn
			}
			e.log.Log(context.Background(), level, "engine: reply subject refused; no reply sent (the outcome is stored)",
				"command", o.CommandID, "reply", truncateSubject(reply), "allowed_prefixes", e.cfg.ReplyPrefixes)
		}
	}
	if err := m.Ack(); err != nil {
		e.log.Warn("engine: ack", "command", o.CommandID, "err", err)
	}
}

// replyAllowed reports whether the engine may send a direct reply to s: a
// plain subject under one of the configured reply prefixes.
func (e *Engine) replyAllowed(s string) bool {
	if s == "" || len(s) > 256 || strings.ContainsAny(s, "*> \t\r\n") {
		return false
	}
	for _, p := range e.cfg.ReplyPrefixes {
		if strings.HasPrefix(s, p) && len(s) > len(p) {
			return true
		}
	}
	return false
}

// truncateSubject shortens a hostile reply subject for a log line, on a
// character boundary.
func truncateSubject(s string) string {
	if len(s) > 80 {
		return textcut.Prefix(s, 80) + "…"
	}
	return s
}

func retryDelay(attempt int) time.Duration {
	return retry.Backoff(attempt, 20*time.Millisecond, 2*time.Second)
}
