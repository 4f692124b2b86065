package engine

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/fsm"
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
// It also returns the stream's last sequence, read first: every command
// stored before this call is at or below it.
func (e *Engine) unfinished(ctx context.Context, cons jetstream.Consumer, src source) ([]jetstream.Msg, uint64, error) {
	for attempt := 0; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, readAttempt)
		msgs, last, err := e.readUnfinished(actx, cons, src)
		cancel()
		if err == nil {
			return msgs, last, nil
		}
		e.log.Warn("engine: could not read the commands taken and not finished; retrying", "stream", src.stream,
			"consumer", src.durable, "attempt", attempt, "err", err)
		if err := retry.Sleep(ctx, retryDelay(attempt)); err != nil {
			return nil, 0, fmt.Errorf("engine: read the unfinished commands of %s: %w", src.durable, err)
		}
	}
}

// readAttempt bounds one read of the commands taken: a request to a
// cluster electing its leaders can go unanswered, and the next attempt may
// reach the new leader.
const readAttempt = 10 * time.Second

func (e *Engine) readUnfinished(ctx context.Context, cons jetstream.Consumer, src source) ([]jetstream.Msg, uint64, error) {
	st, err := e.js.Stream(ctx, src.stream)
	if err != nil {
		return nil, 0, fmt.Errorf("engine: stream %s: %w", src.stream, err)
	}
	si := st.CachedInfo()
	if si.Config.Replicas > 1 && (si.Cluster == nil || si.Cluster.Leader == "") {
		// Without a leader every member answers with its own state, and
		// one still catching up has a lower last sequence.
		return nil, 0, fmt.Errorf("engine: stream %s has no leader", src.stream)
	}
	last := si.State.LastSeq
	info, err := cons.Info(ctx)
	if err != nil {
		return nil, 0, fmt.Errorf("engine: consumer %s: %w", src.durable, err)
	}
	from, to := info.AckFloor.Stream+1, info.Delivered.Stream
	if to < from || info.NumAckPending == 0 {
		return nil, last, nil
	}
	msgs, err := e.readTaken(ctx, src, from, to, "engine: read the commands taken before this start", nil)
	return msgs, last, err
}

// readTaken returns, in stream order, the commands of src in [from, to]
// that have no stored outcome, leaving out those skip (if not nil) names;
// it logs what it read under msg.
func (e *Engine) readTaken(ctx context.Context, src source, from, to uint64, msg string,
	skip func(ws string, seq uint64) bool) ([]jetstream.Msg, error) {
	// An ephemeral reader of that range; it goes away when deleted below
	// or, should this process die first, once idle.
	rd, err := e.js.CreateConsumer(ctx, src.stream, jetstream.ConsumerConfig{
		Description:       "Turnstile engine: commands taken and not finished",
		FilterSubject:     src.filter,
		DeliverPolicy:     jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:       from,
		AckPolicy:         jetstream.AckNonePolicy,
		InactiveThreshold: time.Minute,
	})
	if err != nil {
		return nil, fmt.Errorf("engine: read unfinished commands: %w", err)
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = e.js.DeleteConsumer(dctx, src.stream, rd.CachedInfo().Name)
	}()
	started := time.Now()
	type taken1 struct {
		msg jetstream.Msg
		id  string // the command's
	}
	var taken []taken1 // delivered commands, finished or not
	for last := from - 1; last < to; {
		batch, err := rd.FetchNoWait(256)
		if err != nil {
			return nil, fmt.Errorf("engine: read unfinished commands: %w", err)
		}
		n := 0
		for m := range batch.Messages() { // read to the end whatever happens
			md, err := m.Metadata()
			if err != nil || md.Sequence.Stream > to {
				continue
			}
			n, last = n+1, md.Sequence.Stream
			ws := e.names.WorkspaceOf(m.Subject())
			if skip != nil && skip(ws, md.Sequence.Stream) {
				continue
			}
			id := commandIDOf(m, ws)
			if id == "" {
				continue // unreadable: refused when it comes back, whatever the order
			}
			taken = append(taken, taken1{msg: m, id: id})
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			return nil, fmt.Errorf("engine: read unfinished commands: %w", err)
		}
		if n == 0 {
			break // the rest were removed from the stream
		}
	}
	// One lookup per command, many at once: the range can be long (the
	// floor stays at the oldest unacked command while later ones are acked).
	done := make([]bool, len(taken))
	var g errgroup.Group
	g.SetLimit(32)
	for i, r := range taken {
		g.Go(func() error {
			// A failed lookup counts as unfinished: handle looks again.
			_, done[i], _ = e.store.Outcome(ctx, r.id)
			return nil
		})
	}
	_ = g.Wait()
	var out []jetstream.Msg
	for i, r := range taken {
		if !done[i] {
			out = append(out, r.msg)
		}
	}
	e.log.Info(msg, "stream", src.stream, "from", from, "to", to,
		"commands", len(taken), "unfinished", len(out), "took", time.Since(started))
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
