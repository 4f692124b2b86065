package worker

import (
	"context"
	"errors"
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
// gets the same id, so repeats are deduplicated. It is in the namespace
// users cannot send (fsm.SystemIDPrefix), so no user command can take its
// outcome subject first. (Before issue 12 report ids had no prefix; a
// report redone after an upgrade gets the new id, and the engine records
// it as stale if the old one was applied: both kinds of id coexist.)
func reportID(op, workspace string, generation uint64) string {
	return fmt.Sprintf("%s%s-%s-g%d", fsm.SystemIDPrefix, op, workspace, generation)
}

// maxReportIDTries bounds the alternative ids a report tries when its own
// holds another command's outcome.
const maxReportIDTries = 4

// ErrReportIDTaken means every id a report could use holds another
// command's outcome.
var ErrReportIDTaken = errors.New("the report's ids hold other commands' outcomes")

// report publishes cmd unless its outcome is already stored (a redo after a
// crash), retrying transport failures until ctx ends. An outcome stored
// under its id counts only if it answers this report (workspace, type,
// generation); another command's outcome there is an alert (logged,
// counted), and the report goes out under the next deterministic
// alternative id (<id>-r1, -r2, ...) rather than being silently dropped.
func report(ctx context.Context, store *events.Store, pub Publisher, log *slog.Logger, m *Metrics, cmd fsm.Command) error {
	base := cmd.ID
	for n := 0; ; n++ {
		if n > 0 {
			cmd.ID = fmt.Sprintf("%s-r%d", base, n)
		}
		o, ok, err := store.Outcome(ctx, cmd.ID)
		if err != nil || !ok {
			break // a failed lookup: publishing is safe, the engine dedupes
		}
		if o.Answers(cmd) {
			return nil
		}
		log.Error("worker: a report's id holds another command's outcome; not counting it as reported",
			"command", cmd.ID, "workspace", cmd.Workspace, "type", cmd.Type, "generation", cmd.Generation,
			"stored_workspace", o.Workspace, "stored_type", o.CommandType, "stored_generation", o.CommandGeneration, "stored_outcome", o.Outcome)
		m.reportIDConflict()
		if n+1 >= maxReportIDTries {
			return fmt.Errorf("report %s: %w", base, ErrReportIDTaken)
		}
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
