package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/synadia-io/orbit.go/jetstreamext"

	"github.com/turnstile-dev/turnstile/events"
)

// commitReq asks for a command's event (if any) and outcome to be stored.
type commitReq struct {
	ctx      context.Context
	env      *events.Envelope // nil when nothing is appended
	expected uint64           // the workspace's last event stream sequence
	outcome  events.OutcomeRecord
	done     chan commitRes
}

type commitRes struct {
	eventSeq  uint64 // stream sequence of the event
	duplicate bool
	// existing is the command's earlier outcome when it had one; nothing
	// was written then.
	existing *events.OutcomeRecord
	err      error
}

// committer writes the events and outcomes of many workspaces' commands in
// one atomic batch: one round trip (and, with sync_always, one fsync) for
// all of them. Outcomes without an event go beside the batch as plain
// publishes (see write). A workspace has at most one command in flight,
// so a batch never holds two appends to one subject.
type committer struct {
	maxBatch int
	log      *slog.Logger
	metrics  *Metrics
	reqs     chan *commitReq
}

func newCommitter(maxBatch int, log *slog.Logger, m *Metrics) *committer {
	return &committer{maxBatch: maxBatch, log: log, metrics: m, reqs: make(chan *commitReq, 4*maxBatch)}
}

// submit queues r and waits for its result.
func (c *committer) submit(ctx context.Context, r *commitReq) commitRes {
	r.ctx, r.done = ctx, make(chan commitRes, 1)
	select {
	case c.reqs <- r:
	case <-ctx.Done():
		return commitRes{err: ctx.Err()}
	}
	select {
	case res := <-r.done:
		return res
	case <-ctx.Done():
		return commitRes{err: ctx.Err()}
	}
}

func (c *committer) run(ctx context.Context, store *events.Store) {
	batch := make([]*commitReq, 0, c.maxBatch)
	for {
		batch = batch[:0]
		select {
		case <-ctx.Done():
			return
		case r := <-c.reqs:
			batch = append(batch, r)
		}
		// Take whatever else is waiting: no timer, so a lone command is
		// never delayed, and under load batches fill by themselves.
	fill:
		for len(batch) < c.maxBatch {
			select {
			case r := <-c.reqs:
				batch = append(batch, r)
			default:
				break fill
			}
		}
		c.write(ctx, store, batch)
	}
}

func (c *committer) write(ctx context.Context, store *events.Store, batch []*commitReq) {
	if c.metrics != nil {
		c.metrics.Batches.Observe(float64(len(batch)))
	}
	// An outcome without an event (a rejection, a no-op, a refusal) is one
	// message, atomic by itself, and its guard (the outcome subject must be
	// empty) needs no batch. An atomic batch costs the server a staging
	// store of its own, created, fsynced and removed (about 2.5 ms against
	// 0.1 ms for a plain publish, docs/benchmarks.md): only appends pay it.
	appends := make([]*commitReq, 0, len(batch))
	var outcomes []*commitReq
	for _, r := range batch {
		if r.env == nil {
			outcomes = append(outcomes, r)
		} else {
			appends = append(appends, r)
		}
	}
	wait := c.publishOutcomes(store, outcomes)
	if len(appends) > 0 {
		// Straight to the batch, even for one command: a refusal (a CAS
		// conflict, a stored outcome) sends it down the single path, which
		// looks up what is stored only then.
		res, err := c.atomic(ctx, store, appends)
		if err == nil {
			for i, r := range appends {
				r.done <- res[i]
			}
		} else {
			if c.metrics != nil && len(appends) > 1 {
				c.metrics.BatchFallbacks.Inc()
			}
			c.log.Debug("engine: atomic batch refused; writing one by one", "commands", len(appends), "err", err)
			for _, r := range appends {
				r.done <- c.single(store, r)
			}
		}
	}
	wait(ctx)
}

// publishOutcomes sends outcome-only requests without waiting, and returns
// a function that waits for their acks and answers each request. One that
// is not plainly stored (the outcome exists, a duplicate id, a transport
// error) goes down the single path, which sorts out why.
func (c *committer) publishOutcomes(store *events.Store, rs []*commitReq) func(context.Context) {
	type sent struct {
		r *commitReq
		f jetstream.PubAckFuture
	}
	inFlight := make([]sent, 0, len(rs))
	for _, r := range rs {
		m, err := store.OutcomeMsg(r.outcome)
		if err != nil {
			r.done <- commitRes{err: err}
			continue
		}
		f, err := store.JetStream().PublishMsgAsync(m)
		if err != nil {
			r.done <- c.single(store, r)
			continue
		}
		inFlight = append(inFlight, sent{r, f})
	}
	return func(ctx context.Context) {
		if len(inFlight) == 0 {
			return
		}
		// An ack that never comes (a lost connection) must not hold the
		// committer: past the JetStream timeout the single path retries.
		timeout := time.NewTimer(store.JetStream().Options().DefaultTimeout)
		defer timeout.Stop()
		for _, s := range inFlight {
			select {
			case ack := <-s.f.Ok():
				if !ack.Duplicate {
					s.r.done <- commitRes{}
					continue
				}
			case <-s.f.Err():
			case <-timeout.C:
				timeout.Reset(0) // the rest are late too: each to the single path
			case <-ctx.Done():
				s.r.done <- commitRes{err: ctx.Err()}
				continue
			}
			s.r.done <- c.single(store, s.r)
		}
	}
}

// atomic writes the whole batch or nothing. Any refusal (typically one
// workspace's CAS conflict) sends every command down the single path, which
// sorts out who conflicted.
func (c *committer) atomic(ctx context.Context, store *events.Store, batch []*commitReq) ([]commitRes, error) {
	msgs := make([]*nats.Msg, 0, 2*len(batch))
	eventAt := make([]int, len(batch))
	for i, r := range batch {
		eventAt[i] = -1
		if r.env != nil {
			m, err := store.EventMsg(*r.env)
			if err != nil {
				return nil, err
			}
			m.Header.Set(jetstream.ExpectedLastSubjSeqHeader, fmt.Sprint(r.expected))
			eventAt[i] = len(msgs)
			msgs = append(msgs, m)
		}
		m, err := store.OutcomeMsg(r.outcome)
		if err != nil {
			return nil, err
		}
		msgs = append(msgs, m)
	}
	start := time.Now()
	ack, err := jetstreamext.PublishMsgBatch(ctx, store.JetStream(), msgs)
	if err != nil {
		return nil, err
	}
	if c.metrics != nil {
		c.metrics.CommitSeconds.Observe(time.Since(start).Seconds())
	}
	if ack.BatchSize != uint64(len(msgs)) {
		return nil, fmt.Errorf("atomic batch of %d stored %d", len(msgs), ack.BatchSize)
	}
	first := ack.Sequence - ack.BatchSize + 1
	res := make([]commitRes, len(batch))
	for i := range batch {
		if eventAt[i] >= 0 {
			res[i].eventSeq = first + uint64(eventAt[i])
		}
	}
	return res, nil
}

// single writes one command's event (compare-and-set) and outcome together,
// or its outcome alone, and sorts out why a write was refused: a command id
// that already has an outcome writes nothing and gets that outcome; a
// workspace that moved on is ErrConflict.
func (c *committer) single(store *events.Store, r *commitReq) commitRes {
	var res commitRes
	if o, ok, err := store.Outcome(r.ctx, r.outcome.CommandID); err != nil {
		return commitRes{err: err}
	} else if ok {
		return commitRes{existing: &o}
	}
	if r.env != nil {
		// The event and its outcome as one atomic batch of two, so that no
		// crash can leave one without the other.
		out, err := c.atomic(r.ctx, store, []*commitReq{r})
		if err == nil {
			return out[0]
		}
		if !events.IsWrongLastSequence(err) {
			// A racing handling of the same command (a recovered copy,
			// another engine) may have stored it meanwhile; within the
			// dedupe window ours is then refused by message id.
			if o, ok, gerr := store.Outcome(r.ctx, r.outcome.CommandID); gerr == nil && ok {
				return commitRes{existing: &o}
			}
			return commitRes{err: err}
		}
		// Either the workspace moved on (a conflict) or this command's
		// event is already stored (a retry that landed); the outcome was
		// checked above.
		ar, err := store.ResolveConflict(r.ctx, *r.env)
		if err != nil {
			return commitRes{err: err}
		}
		// Our event is the newest but has no outcome: written before
		// events and outcomes went together. Record the outcome alone.
		res.eventSeq, res.duplicate = ar.StreamSeq, true
	}
	_, err := store.PublishOutcome(r.ctx, r.outcome)
	if errors.Is(err, events.ErrOutcomeExists) {
		// Another engine, or our own earlier try, got there first.
		o, ok, gerr := store.Outcome(r.ctx, r.outcome.CommandID)
		if gerr == nil && ok {
			res.existing = &o
			return res
		}
		err = errors.Join(err, gerr)
	}
	res.err = err
	return res
}
