package engine

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/turnstile-dev/turnstile/internal/retry"
)

// Lost deliveries. A pull response on its way when a NATS node dies (the
// one the engine is connected to, or the consumer leader routing to it) is
// lost: its commands are marked delivered and wait for an ack that never
// comes, and the server hands them out again only after the ack wait. The
// engine meanwhile reconnects and goes on pulling; a later command of the
// same workspace would be decided first. The loss shows as a jump in the
// consumer sequence of the deliveries this engine receives (each delivery,
// redeliveries included, takes the next one). At such a gap the engine
// catches up before it queues the message at hand, the way recover.go does
// at start: the commands between the consumer's ack floor and that message
// that have no outcome and are neither waiting nor being handled here are
// queued as recovered copies, ahead in their workspaces' order; when the
// server redelivers them they find their outcome and are acked.
//
// Engines sharing the durable see gaps all the time (the others' share), and
// there a catch-up would take up the commands the others are handling: safe
// (an outcome is stored once) but work done twice. One engine alone sees a
// gap only when deliveries were lost. So a gap starts a catch-up after a
// sign that deliveries may have been lost (a reconnect; a failed pull:
// missed heartbeats when the node or the consumer leader went away), or
// when it is the first gap for quietGap: an isolated gap. (A consumer
// leader handed over leaves no sign: the client takes its notice in
// silence.) Under a steady load shared by engines, gaps are never isolated
// and cost nothing; at most one catch-up per source per quietGap is done
// without a sign.
const quietGap = time.Second

// gapWatch follows one source's deliveries. Only its pull loop uses it.
type gapWatch struct {
	cons       jetstream.Consumer
	src        source
	lastCons   uint64    // consumer sequence of the latest delivery
	reconnects uint64    // the connection's reconnects at the last catch-up
	failed     bool      // a pull failed since the last catch-up
	lastGap    time.Time // the last gap, caught up or not
	// pinned: this engine is the consumer's one client (owner.go), so every
	// gap is deliveries it did not get, and is caught up.
	pinned bool
	// sweeping is set while a sweep (below) runs; sweeps tracks it for the
	// partition's release. Both only for pinned watches.
	sweeping atomic.Bool
	sweeps   *sync.WaitGroup
}

func (e *Engine) newGapWatch(cons jetstream.Consumer, src source) *gapWatch {
	w := &gapWatch{cons: cons, src: src, reconnects: e.reconnects()}
	if info := cons.CachedInfo(); info != nil {
		w.lastCons = info.Delivered.Consumer // deliveries before this engine: recover.go's
	}
	return w
}

func (e *Engine) reconnects() uint64 {
	if nc := e.js.Conn(); nc != nil {
		return nc.Stats().Reconnects
	}
	return 0
}

// catchUpBefore queues, if m follows a gap, the commands lost in it.
func (e *Engine) catchUpBefore(ctx context.Context, w *gapWatch, m jetstream.Msg) {
	md, err := m.Metadata()
	if err != nil {
		return // refused by handle
	}
	prev, cur := w.lastCons, md.Sequence.Consumer
	w.lastCons = cur // lower: the consumer was made again, start over
	if cur <= prev+1 {
		return
	}
	rc, now := e.reconnects(), time.Now()
	isolated := now.Sub(w.lastGap) >= quietGap
	w.lastGap = now
	if !w.pinned && rc == w.reconnects && !w.failed && !isolated {
		e.log.Debug("engine: delivery gap among others: another engine's share", "stream", w.src.stream,
			"consumer_seq", cur, "after", prev)
		return
	}
	w.reconnects, w.failed = rc, false
	if md.Sequence.Stream <= 1 {
		return
	}
	started := time.Now()
	// Read until it works: the lost commands go first, as handle retries
	// rather than let a later command overtake (this partition's pulls wait
	// meanwhile; the others go on). Each request is bounded, not the read: a
	// request to a cluster electing its leaders can go unanswered, and the
	// next one may reach the new leader; a read behind a lagging ack floor
	// may be long. Not once Close has begun, or the partition is let go (ctx).
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(e.closing, cancel)()
	msgs, err := e.readTakenOn(ctx, w.src, func(ctx context.Context) (*takenRead, error) {
		return e.gapRange(ctx, w, md.Sequence.Stream)
	}, "engine: delivery gap: read the commands taken and not finished",
		"engine: delivery gap: could not read the commands taken; retrying")
	if err != nil {
		e.log.Warn("engine: delivery gap: gave up reading the commands taken (closing); they come back after the ack wait",
			"stream", w.src.stream)
		return
	}
	for _, r := range msgs {
		e.queue.pushRecovered(e.names.WorkspaceOf(r.Subject()), r)
	}
	if e.cfg.Metrics != nil {
		e.cfg.Metrics.CatchUps.Inc()
		e.cfg.Metrics.CaughtUp.Add(float64(len(msgs)))
	}
	e.log.Info("engine: delivery gap: caught up", "stream", w.src.stream, "consumer_seq", cur, "after", prev,
		"queued", len(msgs), "took", time.Since(started))
}

// Lost deliveries with nothing after them. A gap shows only when a later
// command arrives; if the lost ones were all a partition's senders had in
// flight (each waits for its outcome before sending more), none comes, and
// they would wait out the ack wait. So after a failed pull on a pinned
// consumer (missed heartbeats: its node or its leader went away), a sweep
// waits for the consumer to answer again and queues the commands between
// its ack floor and its last delivery that have no outcome and are neither
// waiting nor being handled here. A command still on its way to this engine
// is then queued twice; the delivery replaces the copy, or finds its
// outcome.

// sweepAfterFailure starts a sweep of w's consumer unless one runs.
func (e *Engine) sweepAfterFailure(ctx context.Context, w *gapWatch) {
	if !w.pinned || w.sweeps == nil || !w.sweeping.CompareAndSwap(false, true) {
		return
	}
	w.sweeps.Go(func() {
		defer w.sweeping.Store(false)
		ctx, cancel := context.WithTimeout(ctx, e.cfg.AckWait)
		defer cancel()
		// The iterator pulls again after its own wait; the consumer may
		// answer before the lost deliveries' node is back (a new leader).
		if retry.Sleep(ctx, retryDelay(0)) != nil {
			return
		}
		msgs, err := e.readTakenOn(ctx, w.src, func(ctx context.Context) (*takenRead, error) {
			return e.sweepRange(ctx, w)
		}, "engine: after a failed pull: read the commands taken and not finished", "")
		if err != nil {
			return // the ack wait is out: the server hands them out again
		}
		for _, r := range msgs {
			e.queue.pushRecovered(e.names.WorkspaceOf(r.Subject()), r)
		}
		if e.cfg.Metrics != nil && len(msgs) > 0 {
			e.cfg.Metrics.CatchUps.Inc()
			e.cfg.Metrics.CaughtUp.Add(float64(len(msgs)))
		}
	})
}

// sweepRange is the read of the commands of w's consumer taken and not
// finished that are not here (empty if there are none).
func (e *Engine) sweepRange(ctx context.Context, w *gapWatch) (*takenRead, error) {
	ictx, cancel := context.WithTimeout(ctx, e.readLimit())
	defer cancel()
	info, err := w.cons.Info(ictx)
	if err != nil {
		return nil, fmt.Errorf("engine: consumer %s: %w", w.src.durable, err)
	}
	from, to := info.AckFloor.Stream+1, info.Delivered.Stream
	if info.NumAckPending == 0 || to < from {
		from, to = 1, 0
	}
	return &takenRead{src: w.src, from: from, to: to, next: from,
		skip: func(ws string, seq uint64) bool { return e.queue.holds(ws, w.src.stream, seq) }}, nil
}

// gapRange is the read of the commands of w's source from the consumer's
// ack floor to its last delivery that have no outcome and are neither
// waiting nor being handled here, nor at (the message at hand). Past at
// too: the message at hand may be a redelivery (a command handed back by
// the previous owner goes first), and commands delivered elsewhere after it
// would be missed by a read that stopped there.
func (e *Engine) gapRange(ctx context.Context, w *gapWatch, at uint64) (*takenRead, error) {
	ictx, cancel := context.WithTimeout(ctx, e.readLimit())
	defer cancel()
	info, err := w.cons.Info(ictx)
	if err != nil {
		return nil, fmt.Errorf("engine: consumer %s: %w", w.src.durable, err)
	}
	from, to := info.AckFloor.Stream+1, max(at-1, info.Delivered.Stream)
	// Bounded: lost deliveries are recent, and no more than MaxAckPending
	// are pending at once.
	if limit := uint64(2 * max(e.perConsumer, 1024)); to >= limit && from < to-limit+1 {
		from = to - limit + 1
	}
	if to < from {
		from, to = 1, 0
	}
	return &takenRead{src: w.src, from: from, to: to, next: from,
		skip: func(ws string, seq uint64) bool { return seq == at || e.queue.holds(ws, w.src.stream, seq) }}, nil
}
