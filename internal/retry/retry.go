// Package retry has the two pieces every retry loop here needs: a bounded,
// jittered exponential delay and a sleep that ends with its context.
package retry

import (
	"context"
	"math/rand/v2"
	"time"
)

// Backoff is the delay before retry number attempt (from 0): base doubled
// attempt times, capped at max, less a random part of up to half of it
// ("equal jitter"). The random part spreads out the retries of many
// goroutines or processes that failed together (a NATS or PostgreSQL
// restart), so they do not all come back in the same instant; the fixed
// half keeps the delay growing.
func Backoff(attempt int, base, max time.Duration) time.Duration {
	d := Ceiling(attempt, base, max)
	if half := int64(d / 2); half > 0 {
		d -= time.Duration(rand.Int64N(half + 1))
	}
	return d
}

// Ceiling is the most Backoff(attempt, base, max) returns: base doubled
// attempt times, capped at max.
func Ceiling(attempt int, base, max time.Duration) time.Duration {
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
