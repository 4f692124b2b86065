// Package retry has the two pieces every retry loop here needs: a bounded
// exponential delay and a sleep that ends with its context.
package retry

import (
	"context"
	"time"
)

// Backoff is base doubled attempt times (attempt 0 gives base), capped at max.
func Backoff(attempt int, base, max time.Duration) time.Duration {
	return min(base<<min(attempt, 16), max)
}

// Sleep waits d, or until ctx ends, which it reports as ctx.Err().
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
