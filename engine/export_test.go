package engine

import (
	"context"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/turnstile-dev/turnstile/fsm"
)

// WithReadAttempt returns cfg with readAttempt (recover.go) set to d.
func WithReadAttempt(cfg Config, d time.Duration) Config {
	cfg.readAttempt = d
	return cfg
}

// WithoutRetake returns cfg whose engines do not take a partition afresh
// when its pull ends by itself (a consumer a test deleted stays deleted).
func WithoutRetake(cfg Config) Config {
	cfg.noRetake = true
	return cfg
}

// UnseenForTest is (*Engine).unseen for a first delivery of a user command
// with a Nats-Msg-Id, stored at stored.
func (e *Engine) UnseenForTest(ctx context.Context, cmd fsm.Command, stored time.Time) bool {
	return !e.unseen(ctx, cmd, &jetstream.MsgMetadata{Timestamp: stored, NumDelivered: 1}, false, false, true).IsZero()
}

// PinForTest is the pin engine e's pull of partition k on stream holds
// (its last delivery's, or the one it started with until one came); "" if
// e does not own k or holds none.
func (e *Engine) PinForTest(k int, stream string) string {
	if e.own == nil {
		return ""
	}
	e.own.mu.Lock()
	defer e.own.mu.Unlock()
	p := e.own.owned[k]
	if p == nil {
		return ""
	}
	if it := p.pulls[stream]; it != nil {
		return it.PinID()
	}
	return ""
}

// DecideForTest is (*Engine).decide: again, the command was handled before.
func (e *Engine) DecideForTest(w fsm.Workspace, cmd fsm.Command, again bool) fsm.Decision {
	return e.decide(w, cmd, again)
}
