package events

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/synadia-io/orbit.go/jetstreamext"

	"github.com/turnstile-dev/turnstile/fsm"
)

// ReplyHeader names the header in which a command's sender asks the engine
// for a copy of the outcome on a core NATS subject, besides the stored one.
const ReplyHeader = "Turnstile-Reply"

// MaxCommitWrites is the most writes one Commit puts in one atomic batch:
// a write is up to two messages (event and outcome), and nats-server
// refuses atomic batches of more than 1,000 messages by default. Commit
// splits larger slices.
const MaxCommitWrites = 500

// Write is one command's record: the event it appends (none for a
// rejection, a no-op, a stale report) and its outcome.
type Write struct {
	// Event, if set, is appended only if the workspace's newest message
	// is still at stream sequence Expected (0: the workspace has none).
	Event    *Envelope
	Expected uint64
	Outcome  OutcomeRecord
}

// Written says what Commit did with one Write. Exactly one of these holds:
// Err is set (nothing of the write may be assumed stored); Existing is set
// (the command already had that outcome: nothing was written); or the
// outcome is stored, and the event, if any, at EventSeq.
type Written struct {
	// EventSeq is the event's stream sequence.
	EventSeq uint64
	// Duplicate: the command's event was already the workspace's newest
	// (an earlier try that landed without its outcome); EventSeq is that
	// event's, and only the outcome was written now.
	Duplicate bool
	// Existing is the command's earlier outcome when it had one.
	Existing *OutcomeRecord
	// Err is ErrConflict when the workspace moved on since it was loaded
	// (reload and decide again), else why nothing could be stored.
	Err error
}

// CommitStats describes how a Commit went, for metrics.
type CommitStats struct {
	// Batch is how long the atomic batch of events and outcomes took until
	// the server's ack; 0 when none was sent.
	Batch time.Duration
	// Fallback: an atomic batch of more than one command was refused as a
	// whole (usually one workspace's conflict) and rewritten one by one.
	Fallback bool
}

// Commit stores the writes of many commands, for different workspaces (a
// batch must not hold two events for one workspace), and says for each
// what happened, in order.
//
// Guarantees: an event is stored only with its outcome (one atomic
// batch), and only if its workspace's newest message is at Expected; a
// command has at most one outcome, ever (the outcome subject must be
// empty), so handling a command twice stores nothing twice. A refusal is
// sorted out per write: a command that has an outcome gets it back
// (Written.Existing), a workspace that moved on is ErrConflict.
//
// Outcomes without an event are single messages guarded alone, so they go
// beside the atomic batch, not in it: an atomic batch costs the server a
// staging store of its own, created, fsynced and removed (about 2.5 ms
// against 0.1 ms for a plain publish, docs/benchmarks.md).
func (s *Store) Commit(ctx context.Context, ws []Write) ([]Written, CommitStats) {
	out := make([]Written, len(ws))
	var st CommitStats
	for lo := 0; lo < len(ws); lo += MaxCommitWrites {
		hi := min(lo+MaxCommitWrites, len(ws))
		chunk := s.commit(ctx, ws[lo:hi], out[lo:hi])
		st.Batch += chunk.Batch
		st.Fallback = st.Fallback || chunk.Fallback
	}
	return out, st
}

func (s *Store) commit(ctx context.Context, ws []Write, out []Written) CommitStats {
	var st CommitStats
	appends := make([]int, 0, len(ws))
	var alone []int
	for i := range ws {
		if ws[i].Event == nil {
			alone = append(alone, i)
		} else {
			appends = append(appends, i)
		}
	}
	wait := s.publishOutcomes(ws, out, alone)
	if len(appends) > 0 {
		// Straight to the batch, even for one command: a refusal (a CAS
		// conflict, a stored outcome) sends it down the single path, which
		// looks up what is stored only then.
		batch := make([]Write, len(appends))
		for j, i := range appends {
			batch[j] = ws[i]
		}
		start := time.Now()
		seqs, err := s.atomic(ctx, batch)
		if err == nil {
			st.Batch = time.Since(start)
			for j, i := range appends {
				out[i] = Written{EventSeq: seqs[j]}
			}
		} else {
			st.Fallback = len(appends) > 1
			for _, i := range appends {
				out[i] = s.single(ctx, ws[i])
			}
		}
	}
	wait(ctx)
	return st
}

// publishOutcomes sends the outcomes of ws[at...] (writes without an
// event) without waiting, and returns a function that waits for their
// acks and fills out. One that is not plainly stored (the outcome exists,
// a duplicate id, a transport error) goes down the single path, which
// sorts out why.
func (s *Store) publishOutcomes(ws []Write, out []Written, at []int) func(context.Context) {
	type sent struct {
		i int
		f jetstream.PubAckFuture
	}
	inFlight := make([]sent, 0, len(at))
	for _, i := range at {
		m, err := s.outcomeMsg(ws[i].Outcome)
		if err != nil {
			out[i] = Written{Err: err}
			continue
		}
		f, err := s.js.PublishMsgAsync(m)
		if err != nil {
			inFlight = append(inFlight, sent{i, nil})
			continue
		}
		inFlight = append(inFlight, sent{i, f})
	}
	return func(ctx context.Context) {
		if len(inFlight) == 0 {
			return
		}
		// An ack that never comes (a lost connection) must not hold the
		// writer: past the JetStream timeout the single path retries.
		timeout := time.NewTimer(s.js.Options().DefaultTimeout)
		defer timeout.Stop()
		for _, p := range inFlight {
			if p.f != nil {
				select {
				case ack := <-p.f.Ok():
					if !ack.Duplicate {
						out[p.i] = Written{}
						continue
					}
				case <-p.f.Err():
				case <-timeout.C:
					timeout.Reset(0) // the rest are late too: each to the single path
				case <-ctx.Done():
					out[p.i] = Written{Err: ctx.Err()}
					continue
				}
			}
			out[p.i] = s.single(ctx, ws[p.i])
		}
	}
}

// atomic writes every event and outcome of batch or nothing, and returns
// the events' stream sequences (0 for a write without an event).
func (s *Store) atomic(ctx context.Context, batch []Write) ([]uint64, error) {
	msgs := make([]*nats.Msg, 0, 2*len(batch))
	eventAt := make([]int, len(batch))
	for i, w := range batch {
		eventAt[i] = -1
		if w.Event != nil {
			m, err := s.eventMsg(*w.Event)
			if err != nil {
				return nil, err
			}
			m.Header.Set(jetstream.ExpectedLastSubjSeqHeader, fmt.Sprint(w.Expected))
			eventAt[i] = len(msgs)
			msgs = append(msgs, m)
		}
		m, err := s.outcomeMsg(w.Outcome)
		if err != nil {
			return nil, err
		}
		msgs = append(msgs, m)
	}
	ack, err := jetstreamext.PublishMsgBatch(ctx, s.js, msgs)
	if err != nil {
		return nil, err
	}
	if ack.BatchSize != uint64(len(msgs)) {
		return nil, fmt.Errorf("atomic batch of %d stored %d", len(msgs), ack.BatchSize)
	}
	first := ack.Sequence - ack.BatchSize + 1
	seqs := make([]uint64, len(batch))
	for i := range batch {
		if eventAt[i] >= 0 {
			seqs[i] = first + uint64(eventAt[i])
		}
	}
	return seqs, nil
}

// single writes one command's event (compare-and-set) and outcome
// together, or its outcome alone, and sorts out why a write was refused: a
// command id that already has an outcome writes nothing and gets that
// outcome; a workspace that moved on is ErrConflict.
func (s *Store) single(ctx context.Context, w Write) Written {
	var res Written
	if o, ok, err := s.Outcome(ctx, w.Outcome.CommandID); err != nil {
		return Written{Err: err}
	} else if ok {
		return Written{Existing: &o}
	}
	if w.Event != nil {
		// The event and its outcome as one atomic batch of two, so that no
		// crash can leave one without the other.
		seqs, err := s.atomic(ctx, []Write{w})
		if err == nil {
			return Written{EventSeq: seqs[0]}
		}
		if !IsWrongLastSequence(err) && !isDuplicateInBatch(err) {
			// A racing handling of the same command (a recovered copy,
			// another engine) may have stored it meanwhile; within the
			// dedupe window ours is then refused by message id.
			if o, ok, gerr := s.Outcome(ctx, w.Outcome.CommandID); gerr == nil && ok {
				return Written{Existing: &o}
			}
			return Written{Err: err}
		}
		// Either the workspace moved on (a conflict) or this command's
		// event is already stored (a retry that landed: within the
		// duplicate window an atomic batch refuses its id before the
		// sequence check); the outcome was checked above.
		seq, err := s.resolveConflict(ctx, *w.Event)
		if err != nil {
			return Written{Err: err}
		}
		// Our event is the newest but has no outcome: written before
		// events and outcomes went together. Record the outcome alone.
		res.EventSeq, res.Duplicate = seq, true
	}
	_, err := s.publishOutcome(ctx, w.Outcome)
	if errors.Is(err, errOutcomeExists) {
		// Another engine, or our own earlier try, got there first.
		o, ok, gerr := s.Outcome(ctx, w.Outcome.CommandID)
		if gerr == nil && ok {
			res.Existing = &o
			return res
		}
		err = errors.Join(err, gerr)
	}
	res.Err = err
	return res
}

// isDuplicateInBatch reports an atomic batch refused because a message's
// id is in the stream's duplicate window.
func isDuplicateInBatch(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jetstreamext.JSErrCodeBatchPublishDuplicateMsgID
}

// ErrConflict means another writer appended to the workspace since it was
// loaded: reload and decide again.
var ErrConflict = errors.New("append conflict: the workspace changed since it was loaded")

// resolveConflict handles "wrong last sequence" for env: on a
// single-replica stream the sequence check runs before dedupe, so our own
// earlier try may be the newest event. It compares command ids before
// calling it a conflict (ErrConflict), and returns the stored event's
// stream sequence when it is ours.
func (s *Store) resolveConflict(ctx context.Context, env Envelope) (uint64, error) {
	h, err := s.Load(ctx, env.Workspace)
	if err != nil {
		return 0, fmt.Errorf("after append conflict: %w", err)
	}
	if h.Last != nil && h.Last.CommandID == env.CommandID {
		return h.StreamSeq, nil
	}
	return 0, ErrConflict
}

// eventMsg builds the message that appends env (its expected sequence is
// set by the caller).
func (s *Store) eventMsg(env Envelope) (*nats.Msg, error) {
	data, err := s.codec.Encode(env)
	if err != nil {
		return nil, err
	}
	m := nats.NewMsg(s.names.Event(env.Workspace))
	m.Data = data
	m.Header.Set(jetstream.MsgIDHeader, env.CommandID)
	return m, nil
}

// outcomeMsg builds the message that records an outcome.
func (s *Store) outcomeMsg(o OutcomeRecord) (*nats.Msg, error) {
	data, err := EncodeOutcome(o)
	if err != nil {
		return nil, err
	}
	m := nats.NewMsg(s.names.Outcome(o.CommandID))
	m.Data = data
	// Distinct from the event's id: both live in one stream's dedupe table.
	m.Header.Set(jetstream.MsgIDHeader, "out:"+o.CommandID)
	// A command has one outcome, ever: the outcome subject must be empty.
	// This outlives the dedupe window, so a command id reused much later
	// cannot get a second outcome (or, in an atomic batch, a second event).
	m.Header.Set(jetstream.ExpectedLastSubjSeqHeader, "0")
	if o.Outcome != fsm.Accepted && s.rejectedTTL > 0 {
		// It changed nothing: once it expires, the command id may be
		// decided again (the command itself expired before it).
		m.Header.Set(jetstream.MsgTTLHeader, s.rejectedTTL.String())
	}
	return m, nil
}

// errOutcomeExists means the command already has a stored outcome.
var errOutcomeExists = errors.New("the command already has an outcome")

// publishOutcome stores a command's outcome alone, retrying transient
// errors. It returns errOutcomeExists if the command has one already
// (including our own earlier try).
func (s *Store) publishOutcome(ctx context.Context, o OutcomeRecord) (uint64, error) {
	m, err := s.outcomeMsg(o)
	if err != nil {
		return 0, err
	}
	for attempt := 0; ; attempt++ {
		ack, err := s.js.PublishMsg(ctx, m)
		if err == nil {
			return ack.Sequence, nil
		}
		if IsWrongLastSequence(err) {
			return 0, errOutcomeExists
		}
		if !IsRetryable(err) || attempt >= 8 || ctx.Err() != nil {
			return 0, fmt.Errorf("publish outcome of %s: %w", o.CommandID, err)
		}
		if err := backoff(ctx, attempt); err != nil {
			return 0, err
		}
	}
}
