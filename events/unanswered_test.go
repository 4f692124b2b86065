package events

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// A create that goes unanswered is sent again when its try's time is up,
// not held until the caller's deadline; an error NATS means as final
// comes back at once; the caller's deadline still ends it; and without a
// deadline the tries are bounded, so the caller gets the error back.
func TestUnansweredIsSentAgain(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tries := 0
	start := time.Now()
	err := unanswered(ctx, 50*time.Millisecond, 5, func(ctx context.Context) error {
		tries++
		if tries < 3 {
			<-ctx.Done() // lost: no answer before the try's time is up
			return ctx.Err()
		}
		return nil
	})
	if err != nil || tries != 3 {
		t.Fatalf("got %v after %d tries, want success at the third", err, tries)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("took %v: the tries were not bounded", d)
	}

	tries = 0
	final := &jetstream.APIError{Code: 400, ErrorCode: jetstream.JSErrCodeStreamNameInUse}
	err = unanswered(ctx, 50*time.Millisecond, 5, func(context.Context) error {
		tries++
		return final
	})
	if !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) || tries != 1 {
		t.Fatalf("got %v after %d tries, want the name-in-use error at once", err, tries)
	}

	short, stop := context.WithTimeout(ctx, 200*time.Millisecond)
	defer stop()
	err = unanswered(short, 50*time.Millisecond, 100, func(ctx context.Context) error {
		<-ctx.Done()
		return ctx.Err()
	})
	if !errors.Is(err, context.DeadlineExceeded) || short.Err() == nil {
		t.Fatalf("got %v with the caller's deadline passed: %v", err, short.Err())
	}

	tries = 0
	err = unanswered(context.Background(), 20*time.Millisecond, 3, func(ctx context.Context) error {
		tries++
		<-ctx.Done()
		return ctx.Err()
	})
	if !errors.Is(err, context.DeadlineExceeded) || tries != 3 {
		t.Fatalf("without a deadline: got %v after %d tries, want the timeout after 3", err, tries)
	}
}
