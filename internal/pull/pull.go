package pull

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/turnstile-dev/turnstile/internal/retry"
)

// ErrEnded is what a loop returns when its iterator ended by itself: it
// delivers nothing again, and the caller must make a new one (after binding
// the consumer again) to go on.
var ErrEnded = errors.New("the pull ended by itself")

// Loop hands each message of it to handle until it is closed or ctx ends.
// After a failed read it logs "<name>: pull" and waits delay(failures).
// It returns nil when ctx ended or the caller stopped or drained it, and
// an error wrapping ErrEnded and the cause when the iterator ended by
// itself (see LoopNotify).
func Loop(ctx context.Context, it jetstream.MessagesContext, name string, log *slog.Logger,
	delay func(failures int) time.Duration, handle func(jetstream.Msg)) error {
	return LoopNotify(ctx, it, name, log, delay, handle, nil)
}

// LoopNotify is Loop that also calls failed, if not nil, with each failed
// read, in the loop's goroutine, before the wait: a failed read may mean
// deliveries were lost on the way (see engine/gap.go).
//
// The iterator ends by itself when the server answers a pull in a way
// nats.go takes as final (409 Consumer Deleted: an operator's `nats
// consumer rm`, a reset; 400 Bad Request: the consumer made again without
// the pull's priority group), or when the connection is closed; the loop
// then returns at once, without failed or a wait, wrapping ErrEnded and the
// cause. An iterator found closed right after a failed read, ctx still
// alive, ended on that failure too (a cause nats.go may add later): so a
// caller ending the loop on purpose cancels ctx before it stops the
// iterator, or such a stop may be reported as an end by itself.
func LoopNotify(ctx context.Context, it jetstream.MessagesContext, name string, log *slog.Logger,
	delay func(failures int) time.Duration, handle func(jetstream.Msg), failed func(error)) error {
	failures := 0
	var lastErr error // the failed read just before, if the last read failed
	for {
		m, err := it.Next()
		if err != nil {
			switch {
			case ctx.Err() != nil:
				return nil
			case errors.Is(err, jetstream.ErrConsumerDeleted), errors.Is(err, jetstream.ErrBadRequest),
				errors.Is(err, jetstream.ErrConnectionClosed):
				return fmt.Errorf("%w: %w", ErrEnded, err)
			case errors.Is(err, jetstream.ErrMsgIteratorClosed) && lastErr != nil:
				return fmt.Errorf("%w after: %w", ErrEnded, lastErr)
			case errors.Is(err, jetstream.ErrMsgIteratorClosed):
				return nil
			}
			log.Warn(name+": pull", "err", err)
			if failed != nil {
				failed(err)
			}
			if retry.Sleep(ctx, delay(failures)) != nil {
				return nil
			}
			failures++
			lastErr = err
			continue
		}
		failures, lastErr = 0, nil
		handle(m)
	}
}
