package engine

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/internal/jspull"
	"github.com/turnstile-dev/turnstile/internal/retry"
)

// Recovery. A command an earlier engine took and did not finish is read
// again from the stream and handled at once, ahead of its workspace's later
// commands, instead of waiting for the server to redeliver it after the ack
// wait; the redelivery then finds its outcome and is acked. Handling a
// command another engine is still handling is safe: an outcome is stored at
// most once (its subject must be empty) and goes in one atomic batch with
// the event, so the slower of the two stores nothing and returns the stored
// outcome.

// unfinished returns, in stream order, the commands the durable consumer
// delivered that have no stored outcome: taken by an engine that died (or
// by another engine, still at work) and not finished. They lie between the
// consumer's ack floor and its last delivered sequence. It reads until it
// works or ctx ends (then the error): a partition is not taken without
// them, since a later command of their workspaces would overtake them.
//
// That range can be long: one command held up (a store that keeps failing
// it) keeps the floor where it is while later commands are acked, 300,000
// of them after ten minutes at 500 a second. So no attempt is bounded as a
// whole, only each request in it (readAttempt), and a failed attempt goes
// on from the last page read: a read that makes progress finishes, however
// long the range.
//
// It also returns the stream's last sequence, read first: every command
// stored before this call is at or below it.
func (e *Engine) unfinished(ctx context.Context, cons jetstream.Consumer, src source) ([]jetstream.Msg, uint64, error) {
	var last uint64
	out, err := e.readTakenOn(ctx, src, func(ctx context.Context) (*takenRead, error) {
		var r *takenRead
		var err error
		last, r, err = e.takenRange(ctx, cons, src)
		return r, err
	}, "engine: read the commands taken before this start", "engine: could not read the commands taken and not finished; retrying")
	if err != nil {
		return nil, 0, fmt.Errorf("engine: read the unfinished commands of %s: %w", src.durable, err)
	}
	return out, last, nil
}

// readTakenOn reads the commands taken that open names, to the end: open
// (again, until it works) gives the range, and a failed attempt goes on
// from the last page read, at once if it got on (each request is bounded,
// readMore, not the read). It logs the read under done, each failure under
// retrying (if not ""), and returns the unfinished commands in stream
// order, or ctx's error.
func (e *Engine) readTakenOn(ctx context.Context, src source, open func(context.Context) (*takenRead, error),
	done, retrying string) ([]jetstream.Msg, error) {
	started := time.Now()
	var r *takenRead
	for attempt := 0; ; attempt++ {
		var err error
		if r == nil {
			if r, err = open(ctx); err != nil {
				r = nil
			}
		}
		if r != nil {
			at := r.next
			if err = e.readMore(ctx, r); err == nil {
				if r.to >= r.from {
					e.log.Info(done, "stream", src.stream, "from", r.from, "to", r.to,
						"commands", r.commands, "unfinished", len(r.out), "took", time.Since(started))
				}
				return r.out, nil
			}
			if r.next > at {
				attempt = 0 // it got on: try again at once
			}
		}
		if retrying != "" {
			e.log.Warn(retrying, "stream", src.stream, "consumer", src.durable, "attempt", attempt, "err", err)
		}
		if err := retry.Sleep(ctx, retryDelay(attempt)); err != nil {
			return nil, err
		}
	}
}

// readAttempt bounds each request of a read of the commands taken (here
// and in gap.go): a request to a cluster electing its leaders can go
// unanswered, and the next attempt may reach the new leader.
const readAttempt = 10 * time.Second

// readLimit is readAttempt, or Config.readAttempt where a test set it.
func (e *Engine) readLimit() time.Duration {
	if e.cfg.readAttempt > 0 {
		return e.cfg.readAttempt
	}
	return readAttempt
}

// takenRange returns the stream's last sequence and a read of the range the
// consumer delivered and has not seen acked (empty if none).
func (e *Engine) takenRange(ctx context.Context, cons jetstream.Consumer, src source) (uint64, *takenRead, error) {
	rctx, cancel := context.WithTimeout(ctx, e.readLimit())
	defer cancel()
	st, err := e.js.Stream(rctx, src.stream)
	if err != nil {
		return 0, nil, fmt.Errorf("engine: stream %s: %w", src.stream, err)
	}
	si := st.CachedInfo()
	if si.Config.Replicas > 1 && (si.Cluster == nil || si.Cluster.Leader == "") {
		// Without a leader every member answers with its own state, and
		// one still catching up has a lower last sequence.
		return 0, nil, fmt.Errorf("engine: stream %s has no leader", src.stream)
	}
	last := si.State.LastSeq
	cctx, cancel := context.WithTimeout(ctx, e.readLimit())
	defer cancel()
	info, err := cons.Info(cctx)
	if err != nil {
		return 0, nil, fmt.Errorf("engine: consumer %s: %w", src.durable, err)
	}
	from, to := info.AckFloor.Stream+1, info.Delivered.Stream
	if to < from || info.NumAckPending == 0 {
		return last, &takenRead{src: src, from: 1, to: 0, next: 1}, nil
	}
	return last, &takenRead{src: src, from: from, to: to, next: from}, nil
}

// takenRead is a read, in stream order, of the commands of src in [from,
// to] that have no stored outcome, leaving out those skip (if not nil)
// names. It keeps what it has read: readMore goes on from next.
type takenRead struct {
	src      source
	from, to uint64
	skip     func(ws string, seq uint64) bool
	next     uint64          // the first sequence not read yet
	commands int             // read, finished or not
	out      []jetstream.Msg // unfinished, in stream order
}

// takenPage is how many commands readMore reads, and then looks up, at once.
const takenPage = 256

// readMore reads r on from r.next to r.to, a page at a time, each page's
// outcomes looked up before the next page is read, so that only the
// unfinished commands are held. It returns at the first request that fails
// or goes unanswered for readLimit, with r advanced past the pages read.
func (e *Engine) readMore(ctx context.Context, r *takenRead) error {
	if r.next > r.to {
		return nil
	}
	limit := e.readLimit()
	// An ephemeral reader of the rest of the range; it goes away when
	// deleted below or, should this process die first, once idle.
	cctx, cancel := context.WithTimeout(ctx, limit)
	rd, err := e.js.CreateConsumer(cctx, r.src.stream, jetstream.ConsumerConfig{
		Description:       "Turnstile engine: commands taken and not finished",
		FilterSubject:     r.src.filter,
		DeliverPolicy:     jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:       r.next,
		AckPolicy:         jetstream.AckNonePolicy,
		InactiveThreshold: time.Minute,
	})
	cancel()
	if err != nil {
		return fmt.Errorf("engine: read unfinished commands: %w", err)
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = e.js.DeleteConsumer(dctx, r.src.stream, rd.CachedInfo().Name)
	}()
	// Deliveries to the reader are numbered from 1 without a hole: a jump
	// is a page cut short on the way (jspull.Fetch gives up after a second
	// of silence), whose commands the reader will not give again.
	delivered := uint64(0)
	for r.next <= r.to {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("engine: read unfinished commands: %w", err)
		}
		// jspull, not rd.FetchNoWait: nats.go's fetch reads a command
		// stored with no body and a Status header as the server's status.
		fctx, cancel := context.WithTimeout(ctx, limit)
		batch, fetchErr := jspull.Fetch(fctx, e.js.Conn(), jspull.NextSubject(e.js, r.src.stream, rd.CachedInfo().Name), takenPage)
		cancel()
		var page []takenCommand
		through, read, lost, past := r.next-1, 0, false, false
		for _, m := range batch { // read to the end whatever happens
			md, err := m.Metadata()
			if err != nil || lost || past {
				continue
			}
			if md.Sequence.Consumer != delivered+1 {
				lost = true
				continue
			}
			delivered++
			if md.Sequence.Stream > r.to {
				past = true
				continue
			}
			through, read = md.Sequence.Stream, read+1
			ws := e.names.WorkspaceOf(m.Subject())
			if r.skip != nil && r.skip(ws, md.Sequence.Stream) {
				continue
			}
			if id := commandIDOf(m, ws); id != "" { // unreadable: refused when it comes back, whatever the order
				page = append(page, takenCommand{msg: m, id: id})
			}
		}
		if fetchErr != nil {
			return fmt.Errorf("engine: read unfinished commands: %w", fetchErr)
		}
		unfinished, err := e.withoutOutcome(ctx, page)
		if err != nil {
			return err
		}
		r.out = append(r.out, unfinished...)
		r.commands += read
		r.next = through + 1
		switch {
		case lost:
			return errors.New("engine: read unfinished commands: a page was cut short")
		case past:
			r.next = r.to + 1
		case read == 0:
			// Nothing came: the rest was removed from the stream, or the
			// answer was lost on the way. The reader tells which.
			ictx, cancel := context.WithTimeout(ctx, limit)
			info, err := rd.Info(ictx)
			cancel()
			if err != nil {
				return fmt.Errorf("engine: read unfinished commands: %w", err)
			}
			if info.NumPending > 0 || info.Delivered.Consumer != delivered {
				return errors.New("engine: read unfinished commands: no answer")
			}
			r.next = r.to + 1
		}
	}
	return nil
}

type takenCommand struct {
	msg jetstream.Msg
	id  string // the command's
}

// withoutOutcome returns, in order, the commands of page that have no
// stored outcome; an error if the lookup fails, which the next attempt
// makes again. The page is looked up at once (events.Store.OutcomesHeld:
// one direct batch get for a page of more than 16), under readLimit.
//
// Presence only, on any replica: a lagging replica's false "none" only has
// the command handled again, which finds its outcome. A command whose
// stored outcome cannot be decoded counts as done, and is left to its
// redelivery after the ack wait, which drops it (dropUnreadable): handling
// it now would drop it too, but the ack of a command read here goes to the
// reader of the range, not to the consumer that took it, so the
// redelivery would come all the same and drop it a second time. It is
// never decided, so the later commands of its workspace may go first.
func (e *Engine) withoutOutcome(ctx context.Context, page []takenCommand) ([]jetstream.Msg, error) {
	if len(page) == 0 {
		return nil, nil
	}
	ids := make([]string, len(page))
	for i, c := range page {
		ids[i] = c.id
	}
	lctx, cancel := context.WithTimeout(ctx, e.readLimit())
	done, err := e.store.OutcomesHeld(lctx, ids)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("engine: read unfinished commands: %w", err)
	}
	var out []jetstream.Msg
	for i, c := range page {
		if !done[i] {
			out = append(out, c.msg)
		}
	}
	return out, nil
}

// commandIDOf is the id a command's outcome is stored under, as handle
// finds it; "" if the message is unreadable.
func commandIDOf(m jetstream.Msg, ws string) string {
	cmd, err := events.DecodeCommand(m.Data(), ws)
	if err != nil {
		return ""
	}
	if id := m.Headers().Get(jetstream.MsgIDHeader); id != "" && id != cmd.ID {
		return ""
	}
	if fsm.ValidateCommandID(cmd.ID) != nil {
		return ""
	}
	return cmd.ID
}
