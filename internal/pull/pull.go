package pull

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/turnstile-dev/turnstile/internal/retry"
)

// Loop hands each message of it to handle until it is closed or ctx ends.
// After a failed read it logs "<name>: pull" and waits delay(failures).
func Loop(ctx context.Context, it jetstream.MessagesContext, name string, log *slog.Logger,
	delay func(failures int) time.Duration, handle func(jetstream.Msg)) {
	LoopNotify(ctx, it, name, log, delay, handle, nil)
}

// LoopNotify is Loop that also calls failed, if not nil, with each failed
// read, in the loop's goroutine, before the wait: a failed read may mean
// deliveries were lost on the way (see engine/gap.go).
func LoopNotify(ctx context.Context, it jetstream.MessagesContext, name string, log *slog.Logger,
	delay func(failures int) time.Duration, handle func(jetstream.Msg), failed func(error)) {
	failures := 0
	for {
		m, err := it.Next()
		if err != nil {
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) || ctx.Err() != nil {
				return
			}
			log.Warn(name+": pull", "err", err)
			if failed != nil {
				failed(err)
			}
			if retry.Sleep(ctx, delay(failures)) != nil {
				return
			}
			failures++
			continue
		}
		failures = 0
		handle(m)
	}
}
