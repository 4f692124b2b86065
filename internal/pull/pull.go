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
	failures := 0
	for {
		m, err := it.Next()
		if err != nil {
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) || ctx.Err() != nil {
				return
			}
			log.Warn(name+": pull", "err", err)
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
