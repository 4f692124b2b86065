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

// unfinished returns the commands the durable consumer delivered and that
// have no stored outcome: taken by an engine that died (or is another
// engine, still at work) and not finished. They lie between the consumer's
// ack floor and its last delivered sequence.
func (e *Engine) unfinished(ctx context.Context, cons jetstream.Consumer) ([]hold, error) {
	info, err := cons.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("engine: consumer %s: %w", e.cfg.Durable, err)
	}
	from, to := info.AckFloor.Stream+1, info.Delivered.Stream
	if to < from || info.NumAckPending == 0 {
		return nil, nil
	}
	// An ephemeral reader of that range; it goes away when deleted below
	// or, should this process die first, once idle.
	rd, err := e.js.CreateConsumer(ctx, e.names.CommandStream(), jetstream.ConsumerConfig{
		Description:       "Turnstile engine: commands taken and not finished",
		FilterSubject:     e.names.Commands(),
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
		_ = e.js.DeleteConsumer(dctx, e.names.CommandStream(), rd.CachedInfo().Name)
	}()
	started := time.Now()
	var taken []hold // delivered commands, finished or not
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
			if id := commandIDOf(m, ws); id != "" { // else refused when it comes back, whatever the order
				taken = append(taken, hold{ws: ws, seq: md.Sequence.Stream, id: id})
			}
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
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(32)
	for i, h := range taken {
		g.Go(func() error {
			_, ok, err := e.store.Outcome(gctx, h.id)
			done[i] = ok
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, fmt.Errorf("engine: read unfinished commands: %w", err)
	}
	var holds []hold
	for i, h := range taken {
		if !done[i] {
			holds = append(holds, h)
		}
	}
	e.log.Info("engine: read the commands taken before this start", "from", from, "to", to,
		"commands", len(taken), "unfinished", len(holds), "took", time.Since(started))
	return holds, nil
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

// releaseHolds drops each hold whose command got an outcome elsewhere
// (another engine finished it), checking every second, and drops the rest
// at deadline: by then the server has redelivered every command the
// earlier engine held, so one still missing will not come (it was removed
// from the stream) and would hold its workspace for good. Meanwhile the
// commands waiting behind holds are kept from their own redelivery (to
// this engine, a wasted lookup; to another, an overtaking) with
// InProgress every half ack wait.
func (e *Engine) releaseHolds(ctx context.Context, deadline time.Time) {
	beat := max(e.cfg.AckWait/2, time.Second)
	lastBeat := time.Now()
	for {
		if retry.Sleep(ctx, time.Second) != nil {
			return
		}
		holds := e.queue.holds()
		if len(holds) == 0 {
			return
		}
		late := time.Now().After(deadline)
		for _, h := range holds {
			if late {
				e.log.Warn("engine: a command an earlier engine took did not come back; its workspace goes on without it",
					"command", h.id, "workspace", h.ws, "seq", h.seq)
				e.queue.release(h.ws, h.seq)
				continue
			}
			if _, ok, err := e.store.Outcome(ctx, h.id); err == nil && ok {
				e.queue.release(h.ws, h.seq)
			}
		}
		if time.Since(lastBeat) >= beat {
			lastBeat = time.Now()
			for _, m := range e.queue.behindHolds() {
				_ = m.InProgress()
			}
		}
	}
}
