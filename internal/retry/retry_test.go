package retry_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/turnstile-dev/turnstile/internal/retry"
)

// TestBackoff: each delay lies between half its ceiling and the ceiling,
// the ceiling doubles from base up to max, and the delays are spread out.
func TestBackoff(t *testing.T) {
	for _, c := range []struct {
		attempt int
		ceiling time.Duration
	}{{0, 10 * time.Millisecond}, {1, 20 * time.Millisecond}, {3, 80 * time.Millisecond}, {10, time.Second}, {1000, time.Second}} {
		if got := retry.Ceiling(c.attempt, 10*time.Millisecond, time.Second); got != c.ceiling {
			t.Errorf("Ceiling(%d) = %v, want %v", c.attempt, got, c.ceiling)
		}
		seen := map[time.Duration]bool{}
		for range 100 {
			got := retry.Backoff(c.attempt, 10*time.Millisecond, time.Second)
			if got < c.ceiling/2 || got > c.ceiling {
				t.Fatalf("Backoff(%d) = %v, want within [%v, %v]", c.attempt, got, c.ceiling/2, c.ceiling)
			}
			seen[got] = true
		}
		if len(seen) < 10 {
			t.Errorf("Backoff(%d): %d distinct delays in 100, want them spread out", c.attempt, len(seen))
		}
	}
	if got := retry.Backoff(0, 1, time.Second); got != 1 {
		t.Errorf("Backoff(0) of 1ns = %v, want 1ns: nothing to take a half from", got)
	}
}

func TestSleepEndsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := retry.Sleep(ctx, time.Hour); !errors.Is(err, context.Canceled) {
		t.Fatalf("Sleep on a cancelled context: %v", err)
	}
	if err := retry.Sleep(context.Background(), time.Millisecond); err != nil {
		t.Fatalf("Sleep: %v", err)
	}
}
