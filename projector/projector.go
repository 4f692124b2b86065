package projector

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync/atomic"
	"time"

	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/internal/retry"
)

// Projector folds the event stream into the read model. It is safe to call
// Lag and Rebuild while Run runs; run one Run per Projector.
type Projector struct {
	cfg     Config
	store   *store
	dec     decoder
	metrics *metrics
	// linger is how long a batch in flight waits for the next one to
	// overlap with; zero but in tests, which need the overlap for sure.
	linger time.Duration
	// connWait bounds a rebuild's wait for its copiers' connections.
	connWait time.Duration
	// applied is the last checkpoint this projector saw, for lag gauges
	// while PostgreSQL is unreachable.
	applied atomic.Uint64
}

// New checks cfg and registers the metrics. It starts nothing.
func New(cfg Config) (*Projector, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	m, err := newMetrics(cfg.Name, cfg.Registerer)
	if err != nil {
		return nil, err
	}
	return &Projector{
		cfg:      cfg,
		store:    &store{pool: cfg.Pool, name: cfg.Name, now: cfg.Now},
		dec:      decoder{names: cfg.Store.Names()},
		metrics:  m,
		connWait: defaultConnWait,
	}, nil
}

// Run projects until ctx ends, then returns nil. Failures of PostgreSQL or
// NATS are logged and retried from the checkpoint after a bounded,
// jittered exponential backoff (internal/retry). A message that cannot be used (events.Unreadable:
// undecodable, of a newer schema, misaddressed) is quarantined: recorded in
// dead_letters in its batch, counted and logged once, and passed; one bad
// message must not stall the read model of every workspace.
func (p *Projector) Run(ctx context.Context) error {
	failures := 0
	for {
		progressed, err := p.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		p.metrics.errors.Inc()
		if progressed {
			failures = 0
		}
		backoff := retry.Backoff(failures, p.cfg.MinBackoff, p.cfg.MaxBackoff)
		if errors.Is(err, errCheckpointMoved) {
			p.cfg.Logger.Info("projector resumes from the checkpoint it found", "projector", p.cfg.Name, "reason", err)
		} else {
			p.cfg.Logger.Warn("projector failed; retrying from the checkpoint", "projector", p.cfg.Name,
				"err", err, "backoff", backoff)
		}
		p.refreshLag(ctx)
		if retry.Sleep(ctx, backoff) != nil {
			return nil
		}
		failures++
	}
}

// session consumes from the checkpoint until an error. progressed reports
// whether it committed anything.
func (p *Projector) session(ctx context.Context) (progressed bool, err error) {
	// One session of this name writes at a time; the others wait here.
	lead, err := p.store.lead(ctx)
	if err != nil {
		return false, err
	}
	defer p.store.unlead(lead)
	cp, err := p.store.ensureCheckpoint(ctx, lead)
	if err != nil {
		return false, err
	}
	p.metrics.checkpoint.Set(float64(cp.StreamSeq))
	p.applied.Store(cp.StreamSeq)
	it, err := p.cfg.Store.Tail(ctx, cp.StreamSeq+1, 2*p.cfg.BatchSize)
	if err != nil {
		return false, err
	}
	p.cfg.Logger.Debug("projector consuming", "projector", p.cfg.Name, "from", cp.StreamSeq+1)
	// Decoding the next batch overlaps writing this one.
	rctx, cancel := context.WithCancel(ctx)
	batches := make(chan []message, 1)
	readErr := make(chan error, 1)
	go func() {
		defer close(batches)
		readErr <- p.read(rctx, it, cp.StreamSeq+1, batches)
	}()
	defer func() {
		cancel()
		for range batches { // the reader exits on cancel; drop what it had
		}
		it.Stop()
	}()
	cache := map[string]*workspaceRow{} // rows as of the last batch begun; dropped with the session
	var inflight *tx
	defer func() {
		if inflight != nil {
			inflight.rollback(ctx)
		}
	}()
	commit := func() error {
		t := inflight
		inflight = nil
		if err := p.store.finish(ctx, t, p.cfg.Hooks); err != nil {
			return err
		}
		progressed = true
		if h := p.cfg.Hooks.AfterCommit; h != nil {
			if err := h(ctx, t.info); err != nil {
				return fmt.Errorf("after commit: %w", err)
			}
		}
		p.observe(t.msgs)
		return nil
	}
	from := cp.StreamSeq
	// keepBefore commits the batch in flight and the messages of msgs
	// before stream sequence at.
	keepBefore := func(msgs []message, at uint64) error {
		if inflight != nil {
			if err := commit(); err != nil {
				return err
			}
		}
		k := sort.Search(len(msgs), func(i int) bool { return msgs[i].seq >= at })
		if k == 0 {
			return nil
		}
		clear(cache) // the failed fold went on in it up to the gap
		t, err := p.store.begin(ctx, lead, from, msgs[:k], batchInfo(msgs[:k]), cache, nil, p.cfg.Store)
		if err != nil {
			return err
		}
		t.msgs, inflight = msgs[:k], t
		return commit()
	}
	for {
		msgs, ok, ready := p.next(batches, inflight != nil)
		if !ready {
			// Overlap only with a batch that is ready: the one in flight
			// commits now rather than wait for the next.
			if err := commit(); err != nil {
				return progressed, err
			}
			continue
		}
		if !ok {
			break // the reader failed
		}
		info := batchInfo(msgs)
		if len(cache) > maxCached {
			// The cache may start over only with nothing in flight: a
			// batch in flight is not yet in the rows a miss would load.
			if inflight != nil {
				if err := commit(); err != nil {
					return progressed, err
				}
			}
			clear(cache)
		}
		t, err := p.store.begin(ctx, lead, from, msgs, info, cache, inflight, p.cfg.Store)
		if errors.Is(err, errBusy) && inflight != nil {
			if err := commit(); err != nil {
				return progressed, err
			}
			t, err = p.store.begin(ctx, lead, from, msgs, info, cache, nil, p.cfg.Store)
		}
		if err != nil {
			if gap := (*GapError)(nil); errors.As(err, &gap) {
				// Keep what precedes the gap, in this batch too (where
				// batches end is timing): the retry then starts at the
				// gap, and the read model holds all it can.
				if cerr := keepBefore(msgs, gap.StreamSeq); cerr != nil {
					return progressed, errors.Join(err, cerr)
				}
			}
			return progressed, err
		}
		t.msgs = msgs
		if inflight != nil {
			if err := commit(); err != nil {
				t.rollback(ctx) // its checkpoint compare-and-set fails now anyway
				return progressed, err
			}
		}
		inflight = t
		from = info.Last
	}
	// The reader failed: what was written is still good.
	if inflight != nil {
		if err := commit(); err != nil {
			return progressed, err
		}
	}
	return progressed, <-readErr
}

// next receives the next batch; ok is false when the reader has ended.
// With a batch in flight it does not wait, but for p.linger: ready is
// false when no batch came.
func (p *Projector) next(batches <-chan []message, inflight bool) (msgs []message, ok, ready bool) {
	if !inflight {
		msgs, ok = <-batches
		return msgs, ok, true
	}
	select {
	case msgs, ok = <-batches:
		return msgs, ok, true
	default:
	}
	if p.linger <= 0 {
		return nil, false, false
	}
	t := time.NewTimer(p.linger)
	defer t.Stop()
	select {
	case msgs, ok = <-batches:
		return msgs, ok, true
	case <-t.C:
		return nil, false, false
	}
}

// read collects batches from next on until an error.
func (p *Projector) read(ctx context.Context, it *events.Tail, next uint64, out chan<- []message) error {
	for {
		msgs, err := p.collect(ctx, it, next)
		if err != nil {
			return err
		}
		select {
		case out <- msgs:
		case <-ctx.Done():
			return ctx.Err()
		}
		next = msgs[len(msgs)-1].seq + 1
	}
}

// collect blocks for one message, then gathers more until BatchSize or
// BatchWait, whichever comes first.
func (p *Projector) collect(ctx context.Context, it *events.Tail, next uint64) ([]message, error) {
	m, err := it.Next(ctx)
	if err != nil {
		return nil, err
	}
	msgs := make([]message, 0, p.cfg.BatchSize)
	if msgs, err = p.add(msgs, m, next); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(p.cfg.BatchWait)
	for len(msgs) < p.cfg.BatchSize {
		wait := time.Until(deadline)
		if wait <= 0 {
			break
		}
		m, ok, err := it.NextWithin(ctx, wait)
		if err != nil {
			return nil, err
		}
		if !ok {
			break
		}
		if msgs, err = p.add(msgs, m, msgs[len(msgs)-1].seq+1); err != nil {
			return nil, err
		}
	}
	return msgs, nil
}

// ErrGap means the stream no longer holds events the read model needs
// (they were purged or deleted): an event of a workspace follows a hole
// and skips ahead of the workspace's last (a *GapError names it). The
// projector stalls on it, logging it as it retries, and a rebuild refuses
// such a stream: the stream is the read model's only source. A hole alone
// (an expired outcome) is passed.
var ErrGap = events.ErrGap

// add decodes m, which follows want-1. Sequences before it that the
// stream no longer holds are passed (counted when its batch commits): an
// event among them shows as its workspace's next event skipping ahead
// (checkFollows).
func (p *Projector) add(msgs []message, m events.RawMsg, want uint64) ([]message, error) {
	if m.StreamSeq < want {
		return msgs, fmt.Errorf("stream seq %d delivered after %d", m.StreamSeq, want-1)
	}
	dm := p.dec.decode(m.StreamSeq, m.Subject, m.Data, m.Time)
	dm.pending = m.Pending
	if m.StreamSeq > want {
		dm.skipped = m.StreamSeq - want
		p.cfg.Logger.Debug("projector passes stream sequences the stream no longer holds", "projector", p.cfg.Name,
			"from", want, "to", m.StreamSeq-1)
	}
	return append(msgs, dm), nil
}

func batchInfo(msgs []message) BatchInfo {
	b := BatchInfo{First: msgs[0].seq, Last: msgs[len(msgs)-1].seq, Pending: msgs[len(msgs)-1].pending}
	for _, m := range msgs {
		switch {
		case m.event != nil:
			b.Events++
		case m.outcome != nil:
			b.Outcomes++
		case m.dead != nil:
			b.Quarantined++
		}
	}
	return b
}

// observe records a committed batch.
func (p *Projector) observe(msgs []message) {
	now := p.cfg.Now()
	for _, m := range msgs {
		p.metrics.delay.Observe(now.Sub(m.time).Seconds())
		if m.dead != nil { // counted and logged once: its batch is committed
			p.metrics.quarantined.Add(p.cfg.Logger, m.dead)
		}
		p.metrics.skipped.Add(float64(m.skipped))
	}
	last := msgs[len(msgs)-1]
	p.metrics.messages.Add(float64(len(msgs)))
	p.metrics.batches.Inc()
	p.metrics.checkpoint.Set(float64(last.seq))
	p.applied.Store(last.seq)
	p.metrics.lagMessages.Set(float64(last.pending))
	if last.pending == 0 {
		p.metrics.lagSeconds.Set(0)
	} else {
		// The next message arrived no earlier than the last applied one.
		p.metrics.lagSeconds.Set(now.Sub(last.time).Seconds())
	}
}
