package worker

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/internal/retry"
)

// Publisher sends a command durably; *client.Client implements it.
type Publisher interface {
	Publish(ctx context.Context, cmd fsm.Command) (fsm.Command, error)
}

// reportID is the deterministic id of a report: the same observation always
// gets the same id, so repeats are deduplicated.
func reportID(op, workspace string, generation uint64) string {
	return fmt.Sprintf("%s-%s-g%d", op, workspace, generation)
}

// report publishes cmd unless its outcome is already stored (a redo after a
// crash), retrying transport failures until ctx ends.
func report(ctx context.Context, store *events.Store, pub Publisher, log *slog.Logger, cmd fsm.Command) error {
	if _, ok, err := store.Outcome(ctx, cmd.ID); err == nil && ok {
		return nil
	}
	for attempt := 0; ; attempt++ {
		_, err := pub.Publish(ctx, cmd)
		if err == nil {
			return nil
		}
		if fsm.RejectionCode(err) == fsm.CodeInvalid {
			return err // will never pass; say so rather than loop
		}
		log.Warn("worker: report not sent yet; retrying", "command", cmd.ID, "attempt", attempt, "err", err)
		if err := retry.Sleep(ctx, backoff(attempt)); err != nil {
			return err
		}
	}
}

func backoff(attempt int) time.Duration {
	return retry.Backoff(attempt, 50*time.Millisecond, 5*time.Second)
}
