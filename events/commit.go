package events

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
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
	// Atomic writes the event and its outcome in one atomic batch whatever
	// CommitOptions says: for a command another engine may be handling at
	// the same time (a redelivery, a recovered copy), where an event
	// stored without its outcome could meet that engine's other decision.
	// The outcome's guard then refuses the event with it.
	Atomic bool
	// UnseenUntil: the caller vouches that, if its event is sent before
	// this time, no handling of this command id can have stored anything
	// the duplicate window no longer covers (a first delivery of a command
	// whose id carries a recent time, see IDTime): the messages' ids then
	// refuse a second event or outcome, so the outcome check before the
	// events is skipped for it. Checked when the events go out, on a
	// connection that is up (a publish buffered across a reconnect could
	// land any time later). Zero: checked as any write.
	UnseenUntil time.Time
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
	// event's, and only the outcome was written now: Recorded.
	Duplicate bool
	// Recorded is the outcome written with Duplicate. It is the stored
	// event's (its seq, the generation and state it produced), which need
	// not be the one the write carried: that handling may have decided on
	// an older state than the earlier try did.
	Recorded *OutcomeRecord
	// Existing is the command's earlier outcome when it had one.
	Existing *OutcomeRecord
	// Err is ErrConflict when the workspace moved on since it was loaded
	// (reload and decide again), ErrOutcomeUnreadable when the command has
	// an outcome no one can read (trying again changes nothing), else why
	// nothing could be stored.
	Err error
}

// CommitOptions tune how Commit writes.
type CommitOptions struct {
	// AtomicFrom: a batch with at least this many events is written as
	// one atomic batch (events and outcomes together); a smaller one as
	// plain publishes, pipelined. 0 means never atomic.
	//
	// An atomic batch costs a fixed staging store on the server (two
	// fsyncs, about 2.5 ms on a quiet host); a plain publish costs an
	// fsync only where the server fsyncs every write (sync_always), and
	// then one per message. So: never atomic with the server's default
	// durability; with sync_always, atomic from 2.
	AtomicFrom int
}

// CommitStats describes how a Commit went, for metrics.
type CommitStats struct {
	// Batch is how long the events and their outcomes took to be written,
	// until the server's last ack; 0 when no event was written.
	Batch time.Duration
	// Fallback: an atomic batch of more than one command was refused as a
	// whole (usually one workspace's conflict) and rewritten one by one.
	Fallback bool
}

// Commit stores the writes of many commands, for different workspaces (a
// batch must not hold two events for one workspace), and says for each
// what happened, in order.
//
// Guarantees: an event is stored only if its workspace's newest message
// is at Expected; an accepted command's outcome only after its event; a
// command has at most one outcome, ever (the outcome subject must be
// empty). A refusal is sorted out per write: a command that has an
// outcome gets it back (Written.Existing), a workspace that moved on is
// ErrConflict.
//
// A batch of opt.AtomicFrom events or more is one atomic batch, outcomes
// with their events. Otherwise the writes are plain publishes, pipelined: the batch's outcome subjects
// are checked in one request (those of unseen writes are not, and their
// events go out at once), then every event goes out (a compare-and-set
// on its workspace, deduplicated by command id) and their acks are awaited
// together, each event's outcome sent as soon as its ack is in, then the
// outcomes' acks are awaited. Three short round trips for the whole batch
// (the last of which may overlap the next batch's: StartCommit); not an
// atomic batch, which costs the server a staging
// store of its own, created, fsynced and removed (2.5 ms on a quiet host,
// far more when the disk is busy; docs/benchmarks.md). So a crash may
// leave an event without its outcome: the next handling of the command
// finds its event at the head of the workspace and records the outcome
// alone (the engine's repair). And a command handled twice at once stores
// one event and one outcome: the second event is refused by the
// compare-and-set or, within the duplicate window, by its message id; past
// the window only the outcome check before the events stands in the way
// (see docs/reliability.md), skipped for a write the caller marks unseen
// (Write.UnseenUntil).
// A refused write is sorted out by the single path, which still writes an
// event with its outcome in one atomic batch.
func (s *Store) Commit(ctx context.Context, ws []Write, opt CommitOptions) ([]Written, CommitStats) {
	return s.StartCommit(ctx, ws, opt).Wait(ctx)
}

// PendingCommit is a Commit whose last messages are sent but not all
// acknowledged yet (StartCommit's result); Wait finishes it.
type PendingCommit struct {
	s        *Store
	ws       []Write   // the last chunk: what is still pending
	out      []Written // the whole result; the last chunk at its end
	st       CommitStats
	start    time.Time // when the last chunk's events went out; zero if none did
	outcomes *asyncPubs
	alone    *asyncPubs
	single   []int // into ws: to sort out one by one
}

// StartCommit does Commit's work up to where only acks are left to await:
// the outcome check, the events and their acks, every outcome sent (each
// as soon as its own event is acked). Wait awaits the outcomes' acks and
// sorts out the refused writes. Between the two the caller may start the
// next Commit, for other workspaces: the server then stores one batch's
// outcomes while the next batch's check and events are on their way,
// where Commit alone leaves it idle for a round trip per batch. Every
// guarantee is Commit's: an outcome still goes out only after its event
// is acked, and a workspace's next write must wait for Wait (a batch
// holds one write per workspace, and so do the batches in flight).
func (s *Store) StartCommit(ctx context.Context, ws []Write, opt CommitOptions) *PendingCommit {
	out := make([]Written, len(ws))
	var st CommitStats
	// All but the last chunk are written to the end first: larger slices
	// than one atomic batch holds are rare (MaxBatch is below).
	lo := 0
	for ; len(ws)-lo > MaxCommitWrites; lo += MaxCommitWrites {
		p := s.startCommit(ctx, ws[lo:lo+MaxCommitWrites], out[lo:lo+MaxCommitWrites], opt)
		p.Wait(ctx)
		st.Batch += p.st.Batch
		st.Fallback = st.Fallback || p.st.Fallback
	}
	p := s.startCommit(ctx, ws[lo:], out[lo:], opt)
	p.out = out
	p.st.Batch += st.Batch
	p.st.Fallback = p.st.Fallback || st.Fallback
	return p
}

func (s *Store) startCommit(ctx context.Context, ws []Write, out []Written, opt CommitOptions) *PendingCommit {
	p := &PendingCommit{s: s, ws: ws, out: out}
	var appends, alone []int
	for i := range ws {
		if ws[i].Event == nil {
			alone = append(alone, i)
		} else {
			appends = append(appends, i)
		}
	}
	// Outcomes without an event need nothing before them: out at once.
	p.alone = s.newAsyncPubs(len(alone))
	for _, i := range alone {
		m, err := s.outcomeMsg(ws[i].Outcome)
		p.alone.publish(i, m, err)
	}
	if forced := slices.DeleteFunc(slices.Clone(appends), func(i int) bool { return !ws[i].Atomic }); len(forced) > 0 {
		st := s.commitAtomic(ctx, ws, out, forced)
		p.st.Batch += st.Batch
		p.st.Fallback = p.st.Fallback || st.Fallback
		appends = slices.DeleteFunc(appends, func(i int) bool { return ws[i].Atomic })
	}
	if opt.AtomicFrom > 0 && len(appends) >= opt.AtomicFrom {
		st := s.commitAtomic(ctx, ws, out, appends)
		p.st.Batch += st.Batch
		p.st.Fallback = p.st.Fallback || st.Fallback
		return p
	}
	if len(appends) == 0 {
		return p
	}
	start := time.Now()
	// The events, each a compare-and-set on its workspace: the unseen ones
	// at once, the others once the outcome check has found them fresh (a
	// batch holds one write per workspace, so their order is free).
	events := s.newAsyncPubs(len(appends))
	publish := func(i int) {
		m, err := s.eventMsg(*ws[i].Event)
		if err == nil {
			m.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(ws[i].Expected, 10))
		}
		events.publish(i, m, err)
	}
	up := s.js.Conn().Status() == nats.CONNECTED
	var seen []int
	for _, i := range appends {
		if up && start.Before(ws[i].UnseenUntil) {
			publish(i)
		} else {
			seen = append(seen, i)
		}
	}
	if len(seen) > 0 {
		var fresh []int
		fresh, p.single = s.withoutOutcome(ctx, ws, seen)
		for _, i := range fresh {
			publish(i)
		}
	}
	// Each outcome as soon as its event is stored.
	p.outcomes = s.newAsyncPubs(events.len())
	events.wait(ctx, func(i int, ack *jetstream.PubAck, err error) {
		if err != nil || ack.Duplicate {
			// Refused (a conflict, usually), or the command's event
			// already stored by an earlier try: sorted out alone.
			p.single = append(p.single, i)
			return
		}
		out[i].EventSeq = ack.Sequence
		m, err := s.outcomeMsg(ws[i].Outcome)
		p.outcomes.publish(i, m, err)
	})
	if p.outcomes.len() > 0 {
		p.start = start
	}
	p.st.Fallback = p.st.Fallback || len(p.single) > 0 && len(ws) > 1
	return p
}

// Wait awaits what StartCommit sent and says for each write what
// happened, in order, as Commit does.
func (p *PendingCommit) Wait(ctx context.Context) ([]Written, CommitStats) {
	s, ws, out := p.s, p.ws, p.out[len(p.out)-len(p.ws):]
	p.outcomes.wait(ctx, func(i int, ack *jetstream.PubAck, err error) {
		if err == nil && !ack.Duplicate {
			return
		}
		// The event is stored: only the outcome is left to sort out.
		o := s.outcomeAlone(ctx, ws[i].Outcome)
		o.EventSeq = out[i].EventSeq
		out[i] = o
	})
	if !p.start.IsZero() {
		p.st.Batch += time.Since(p.start)
	}
	p.alone.wait(ctx, func(i int, ack *jetstream.PubAck, err error) {
		if err != nil || ack.Duplicate {
			p.single = append(p.single, i)
		}
	})
	for _, i := range p.single {
		out[i] = s.single(ctx, ws[i])
	}
	return p.out, p.st
}

// commitAtomic writes the events of ws[at...] with their outcomes in one
// atomic batch. Any refusal (typically one workspace's CAS conflict) sends
// each of them down the single path, which sorts out who conflicted.
func (s *Store) commitAtomic(ctx context.Context, ws []Write, out []Written, at []int) CommitStats {
	var st CommitStats
	batch := make([]Write, len(at))
	for j, i := range at {
		batch[j] = ws[i]
	}
	start := time.Now()
	seqs, err := s.atomic(ctx, batch)
	if err == nil {
		st.Batch = time.Since(start)
		for j, i := range at {
			out[i] = Written{EventSeq: seqs[j]}
		}
		return st
	}
	st.Fallback = len(at) > 1
	for _, i := range at {
		out[i] = s.single(ctx, ws[i])
	}
	return st
}

// withoutOutcome splits the writes at of ws into those whose command has
// no outcome yet and those that may have one (to the single path, which
// looks and returns it): all their outcome subjects in one round trip.
// Within the duplicate window the events' message ids refuse a second
// handling anyway; past it this check is what keeps a command id sent
// again, and decided again on a newer state, from a second event.
//
// The lookups are direct gets, which any replica may answer, however far
// behind the stream leader; on a replicated stream the leader confirms
// each "none" (outcomeNone), in a second round trip.
func (s *Store) withoutOutcome(ctx context.Context, ws []Write, at []int) (fresh, done []int) {
	subjects := make([]string, len(at))
	for j, i := range at {
		subjects[j] = s.names.Outcome(ws[i].Outcome.CommandID)
	}
	ctx, cancel := context.WithTimeout(ctx, s.js.Options().DefaultTimeout)
	defer cancel()
	var found []bool
	var err error
	if len(at) <= maxParallelOutcomeChecks {
		found, err = s.eachHeld(ctx, subjects, s.directHeld)
	} else {
		found, err = s.batchHeld(ctx, subjects)
	}
	if err == nil {
		err = s.outcomeNone(ctx, subjects, found)
	}
	if err != nil {
		return nil, at // cannot tell: each looks for itself
	}
	for j, i := range at {
		if found[j] {
			done = append(done, i)
		} else {
			fresh = append(fresh, i)
		}
	}
	return fresh, done
}

// maxParallelOutcomeChecks: up to this many outcome subjects are looked up
// with one direct get each, all at once, rather than in one batch get.
// The batch get subscribes an inbox of its own per call (directBatch);
// a direct get rides the connection's shared request inbox. (With
// jetstreamext's batch get, whose every subscription had nats.go's
// 64k-entry channel, 512 KB per call, the batch cost 6% of all CPU at 8
// commands in flight: docs/benchmarks.md.)
const maxParallelOutcomeChecks = 16

// outcomeNone has the stream leader confirm each subject a direct get
// found nothing on (found[j] false), on a replicated stream: a lagging
// replica lacks the outcomes stored since it fell behind, and a command
// id sent again past the duplicate window, taken for fresh, would have its
// event stored a second time (the outcome's guard refuses only the
// outcome, after it). found is updated in place. On one replica, nothing
// (the direct get was the leader's).
func (s *Store) outcomeNone(ctx context.Context, subjects []string, found []bool) error {
	var none []string
	for j, f := range found {
		if !f {
			none = append(none, subjects[j])
		}
	}
	if len(none) == 0 || !s.replicatedLately(ctx) {
		return nil
	}
	held, err := s.eachHeld(ctx, none, s.leaderHeld)
	if err != nil {
		return err
	}
	k := 0
	for j, f := range found {
		if !f {
			found[j] = held[k]
			k++
		}
	}
	return nil
}

// eachHeld looks up each subject with held, all at once, and says for
// each whether it has a message.
func (s *Store) eachHeld(ctx context.Context, subjects []string, held func(context.Context, string) (bool, error)) ([]bool, error) {
	found := make([]bool, len(subjects))
	errs := make([]error, len(subjects))
	check := func(j int) { found[j], errs[j] = held(ctx, subjects[j]) }
	// The first here, the rest beside it: a lone command (the usual one
	// at low load) costs no goroutine and no wake-up more.
	var wg sync.WaitGroup
	for j := 1; j < len(subjects); j++ {
		wg.Go(func() { check(j) })
	}
	if len(subjects) > 0 {
		check(0)
	}
	wg.Wait()
	return found, errors.Join(errs...)
}

// directHeld reports whether a direct get finds a message on subject.
func (s *Store) directHeld(ctx context.Context, subject string) (bool, error) {
	_, err := s.stream.GetLastMsgForSubject(ctx, subject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return false, nil
	}
	return err == nil, err
}

// leaderHeld reports whether the stream leader holds a message on subject.
func (s *Store) leaderHeld(ctx context.Context, subject string) (bool, error) {
	m, err := s.leaderGet(ctx, leaderRequest{LastFor: subject})
	return m != nil, err
}

// batchHeld is eachHeld in one direct batch get.
func (s *Store) batchHeld(ctx context.Context, subjects []string) ([]bool, error) {
	in := map[string]bool{}
	err := s.directBatch(ctx, s.names.EventStream(), batchRequest{MultiLastFor: subjects}, func(m *jetstream.RawStreamMsg) error {
		in[m.Subject] = true
		return nil
	})
	if err != nil {
		return nil, err
	}
	found := make([]bool, len(subjects))
	for j, subject := range subjects {
		found[j] = in[subject]
	}
	return found, nil
}

// asyncPubs are messages sent without waiting for their acks; wait hands
// each ack (or error) on, in the order sent. A nil *asyncPubs has none.
type asyncPubs struct {
	s    *Store
	sent []asyncPub
}

type asyncPub struct {
	i   int
	f   jetstream.PubAckFuture
	err error
}

func (s *Store) newAsyncPubs(n int) *asyncPubs {
	return &asyncPubs{s: s, sent: make([]asyncPub, 0, n)}
}

// publish sends m (built with err) for write i.
func (a *asyncPubs) publish(i int, m *nats.Msg, err error) {
	if err != nil {
		a.sent = append(a.sent, asyncPub{i: i, err: err})
		return
	}
	f, err := a.s.js.PublishMsgAsync(m)
	a.sent = append(a.sent, asyncPub{i: i, f: f, err: err})
}

func (a *asyncPubs) len() int {
	if a == nil {
		return 0
	}
	return len(a.sent)
}

// wait hands each message's ack or error to fn, in order. An ack that
// never comes (a lost connection) does not hold the caller: past the
// JetStream timeout the rest are handed on as timed out.
func (a *asyncPubs) wait(ctx context.Context, fn func(int, *jetstream.PubAck, error)) {
	if a.len() == 0 {
		return
	}
	timeout := time.NewTimer(a.s.js.Options().DefaultTimeout)
	defer timeout.Stop()
	for _, p := range a.sent {
		if p.err != nil {
			fn(p.i, nil, p.err)
			continue
		}
		select {
		case ack := <-p.f.Ok():
			fn(p.i, ack, nil)
		case err := <-p.f.Err():
			fn(p.i, nil, err)
		case <-timeout.C:
			timeout.Reset(0) // the rest are late too
			fn(p.i, nil, nats.ErrTimeout)
		case <-ctx.Done():
			fn(p.i, nil, ctx.Err())
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
	if o, ok, err := s.storedOutcome(ctx, w.Outcome.CommandID); err != nil {
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
		dup := isDuplicateInBatch(err)
		if !IsWrongLastSequence(err) && !dup {
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
		h, err := s.resolveConflict(ctx, *w.Event)
		if errors.Is(err, ErrConflict) && dup {
			// Our id is in the window but our event is not the head:
			// stored earlier, behind events decided since.
			return Written{Err: ErrEventStored}
		}
		if err != nil {
			return Written{Err: err}
		}
		// Our event is the newest but has no outcome (a writer that died
		// between the two). Record the outcome alone: the stored event's,
		// not the one this handling decided.
		o := w.Outcome
		o.Outcome, o.Rejection, o.Reason = fsm.Accepted, nil, ""
		o.EventSeq, o.Generation, o.State = h.Last.Seq, h.State.Generation, h.State.Status
		res = s.outcomeAlone(ctx, o)
		if res.Err == nil && res.Existing == nil {
			res.EventSeq, res.Duplicate, res.Recorded = h.StreamSeq, true, &o
		}
		return res
	}
	return s.outcomeAlone(ctx, w.Outcome)
}

// outcomeAlone stores a command's outcome by itself (its event, if any, is
// stored): Existing if the command has one already.
func (s *Store) outcomeAlone(ctx context.Context, o OutcomeRecord) Written {
	_, err := s.publishOutcome(ctx, o)
	if errors.Is(err, errOutcomeExists) {
		// Another engine, or our own earlier try, got there first.
		prev, ok, gerr := s.storedOutcome(ctx, o.CommandID)
		if gerr == nil && ok {
			return Written{Existing: &prev}
		}
		if errors.Is(gerr, ErrOutcomeUnreadable) {
			return Written{Err: gerr}
		}
		err = errors.Join(err, gerr)
	}
	return Written{Err: err}
}

// isDuplicateInBatch reports an atomic batch refused because a message's
// id is in the stream's duplicate window.
func isDuplicateInBatch(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jetstreamext.JSErrCodeBatchPublishDuplicateMsgID
}

// ErrOutcomeUnreadable means the command id already has a stored outcome
// that cannot be decoded (too large, not an outcome record: written by an
// older build or forged; EncodeOutcome never makes one). Nothing was
// written: the id has its one outcome, and no reader can say what it was.
// Errors with it also match ErrMalformed.
var ErrOutcomeUnreadable = errors.New("the command already has an outcome, which cannot be read")

// storedOutcome is Outcome, with a stored outcome that does not decode
// told apart (ErrOutcomeUnreadable) from a read that failed, which may
// work if tried again: retrying the other never ends.
//
// On a replicated stream a "none" is the stream leader's: Outcome's direct
// get may be a lagging replica's, and the single path would then decide
// again a command that has an outcome (its atomic batch is refused, as a
// conflict, for as long as the replica lags).
func (s *Store) storedOutcome(ctx context.Context, id string) (OutcomeRecord, bool, error) {
	o, ok, err := s.Outcome(ctx, id)
	if err == nil && !ok && s.replicatedLately(ctx) {
		var m *jetstream.RawStreamMsg
		if m, err = s.leaderGet(ctx, leaderRequest{LastFor: s.names.Outcome(id)}); err == nil && m != nil {
			o, err = DecodeOutcome(m.Data)
			ok = err == nil
		}
	}
	if errors.Is(err, ErrMalformed) {
		err = fmt.Errorf("command %s: %w: %w", id, ErrOutcomeUnreadable, err)
	}
	return o, ok, err
}

// ErrConflict means another writer appended to the workspace since it was
// loaded: reload and decide again.
var ErrConflict = errors.New("append conflict: the workspace changed since it was loaded")

// ErrEventStored means the command's event is already stored (its id is
// in the event stream's duplicate window) but is no longer the workspace's
// newest: the command was decided before, and the workspace moved on since.
// Find that event (FindEvent) rather than decide again.
var ErrEventStored = errors.New("the command's event is already stored, behind later events")

// resolveConflict handles "wrong last sequence" for env: on a
// single-replica stream the sequence check runs before dedupe, so our own
// earlier try may be the newest event. It compares command ids before
// calling it a conflict (ErrConflict), and returns the workspace's head
// when the newest event is ours.
func (s *Store) resolveConflict(ctx context.Context, env Envelope) (Head, error) {
	h, err := s.Load(ctx, env.Workspace)
	if err != nil {
		return Head{}, fmt.Errorf("after append conflict: %w", err)
	}
	if h.Last != nil && h.Last.CommandID == env.CommandID && h.Last.StreamSeq == h.StreamSeq {
		return h, nil
	}
	return Head{}, ErrConflict
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
	// An accepted command's outcome follows its event, whose message id is
	// the command id: it needs one of its own. An outcome without an event
	// takes the command id itself, so that within the duplicate window an
	// event of the same command, decided again, is refused by id (and the
	// outcome, after such an event, likewise: publishOutcome).
	id := "out:" + o.CommandID
	if o.Outcome != fsm.Accepted {
		id = o.CommandID
	}
	m.Header.Set(jetstream.MsgIDHeader, id)
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
		if err == nil && ack.Duplicate {
			return s.ownDuplicate(ctx, o, m.Data, ack.Sequence)
		}
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

// ownDuplicate sorts out an outcome (data) refused as a duplicate of the
// message at seq: our own earlier try of it (stored: seq); another
// handling's outcome of the command, refused by id before the subject's
// guard (a replicated stream checks the id first: errOutcomeExists); or,
// for an outcome without an event, the command's event (ErrEventStored:
// it was decided before, and accepted; find that event rather than record
// this).
func (s *Store) ownDuplicate(ctx context.Context, o OutcomeRecord, data []byte, seq uint64) (uint64, error) {
	m, err := s.stream.GetMsg(ctx, seq)
	if err != nil {
		return 0, fmt.Errorf("outcome of %s refused as a duplicate of message %d, which cannot be read: %w", o.CommandID, seq, err)
	}
	if m.Subject == s.names.Outcome(o.CommandID) {
		if !bytes.Equal(m.Data, data) {
			return 0, errOutcomeExists
		}
		return seq, nil
	}
	return 0, fmt.Errorf("outcome of %s: %w (message %d)", o.CommandID, ErrEventStored, seq)
}
