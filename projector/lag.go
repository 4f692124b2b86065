package projector

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/turnstile-dev/turnstile/events"
)

// Lag is how far the read model is behind the stream.
type Lag struct {
	Checkpoint uint64 // last stream sequence applied
	StreamLast uint64 // last stream sequence stored
	// Messages is StreamLast - Checkpoint, expired outcomes among them
	// included; 0 when the stream holds nothing after the checkpoint.
	Messages uint64
	// Behind is how long the oldest unapplied message has been in the
	// stream: 0 when caught up. Unlike "now minus the last applied
	// message", it does not grow while the stream is idle.
	Behind time.Duration
	// LastApplied is the stream time of the last applied message.
	LastApplied time.Time
}

// Lag reads the checkpoint from PostgreSQL and the stream's end from NATS,
// and updates the lag gauges.
func (p *Projector) Lag(ctx context.Context) (Lag, error) {
	cp, err := ReadCheckpoint(ctx, p.cfg.Pool, p.cfg.Name)
	if err != nil && !errors.Is(err, ErrNotFound) { // not found: never ran, nothing applied
		return Lag{}, err
	}
	l, err := p.lagFrom(ctx, cp)
	if err != nil {
		return Lag{}, err
	}
	p.metrics.lagMessages.Set(float64(l.Messages))
	p.metrics.lagSeconds.Set(l.Behind.Seconds())
	return l, nil
}

func (p *Projector) lagFrom(ctx context.Context, cp Checkpoint) (Lag, error) {
	l := Lag{Checkpoint: cp.StreamSeq, LastApplied: cp.MsgTime}
	st, err := p.cfg.Store.State(ctx)
	if err != nil {
		return l, fmt.Errorf("lag: %w", err)
	}
	l.StreamLast = st.LastSeq
	if l.StreamLast <= l.Checkpoint {
		return l, nil
	}
	next := max(l.Checkpoint+1, st.FirstSeq)
	stored, err := p.cfg.Store.StoredAt(ctx, next)
	if errors.Is(err, events.ErrNoMessage) {
		return l, nil // what follows the checkpoint expired: nothing to apply
	}
	if err != nil {
		return l, fmt.Errorf("lag: %w", err)
	}
	l.Messages = l.StreamLast - l.Checkpoint
	l.Behind = max(p.cfg.Now().Sub(stored), 0)
	return l, nil
}

// refreshLag updates the gauges while Run waits to retry, from NATS alone
// when PostgreSQL is what failed, so an outage shows as growing lag.
func (p *Projector) refreshLag(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if _, err := p.Lag(ctx); err == nil {
		return
	}
	cp := Checkpoint{Name: p.cfg.Name, StreamSeq: p.applied.Load()}
	if l, err := p.lagFrom(ctx, cp); err == nil {
		p.metrics.lagMessages.Set(float64(l.Messages))
		p.metrics.lagSeconds.Set(l.Behind.Seconds())
	}
}
