package engine

import (
	"context"
	"log/slog"

	"github.com/turnstile-dev/turnstile/events"
)

// commitReq asks for a command's event (if any) and outcome to be stored.
type commitReq struct {
	w    events.Write
	done chan events.Written
}

// committer gathers the writes of many workspaces' commands into one
// events.Store.Commit: one round trip (and, with sync_always, one fsync)
// for all of them. How they are written is the store's business; the
// committer only batches. A workspace has at most one command in flight,
// so a batch never holds two appends to one subject.
type committer struct {
	maxBatch int
	opt      events.CommitOptions
	log      *slog.Logger
	metrics  *Metrics
	reqs     chan *commitReq
}

func newCommitter(maxBatch, atomicFrom int, log *slog.Logger, m *Metrics) *committer {
	return &committer{maxBatch: maxBatch, opt: events.CommitOptions{AtomicFrom: atomicFrom},
		log: log, metrics: m, reqs: make(chan *commitReq, 4*maxBatch)}
}

// submit queues w and waits for its result.
func (c *committer) submit(ctx context.Context, w events.Write) events.Written {
	r := &commitReq{w: w, done: make(chan events.Written, 1)}
	select {
	case c.reqs <- r:
	case <-ctx.Done():
		return events.Written{Err: ctx.Err()}
	}
	select {
	case res := <-r.done:
		return res
	case <-ctx.Done():
		return events.Written{Err: ctx.Err()}
	}
}

// started is a batch whose writes are sent, waiting for their acks.
type started struct {
	batch   []*commitReq
	pending *events.PendingCommit
}

// run writes batches in two overlapping steps: while one batch's outcomes
// are awaited (finish), the next batch's outcome check and events go out.
// One batch alone leaves the server idle a round trip per batch; a
// workspace's writes stay in order, since its next command is decided only
// after the previous one's result. At most two batches are in flight: the
// handover is unbuffered.
func (c *committer) run(ctx context.Context, store *events.Store) {
	toFinish := make(chan started)
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		for b := range toFinish {
			c.finish(ctx, b)
		}
	}()
	defer func() { close(toFinish); <-finished }()
	for {
		batch := make([]*commitReq, 0, c.maxBatch)
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
		writes := make([]events.Write, len(batch))
		for i, r := range batch {
			writes[i] = r.w
		}
		toFinish <- started{batch: batch, pending: store.StartCommit(ctx, writes, c.opt)}
	}
}

// finish awaits a started batch and hands each command its result.
func (c *committer) finish(ctx context.Context, b started) {
	res, st := b.pending.Wait(ctx)
	if c.metrics != nil {
		c.metrics.Batches.Observe(float64(len(b.batch)))
		if st.Batch > 0 {
			c.metrics.CommitSeconds.Observe(st.Batch.Seconds())
		}
		if st.Fallback {
			c.metrics.BatchFallbacks.Inc()
		}
	}
	if st.Fallback {
		c.log.Debug("engine: batch refused in part; those written one by one", "commands", len(b.batch))
	}
	for i, r := range b.batch {
		r.done <- res[i]
	}
}
