package pull_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/turnstile-dev/turnstile/internal/pull"
	"github.com/turnstile-dev/turnstile/internal/testenv"
)

// TestLoop: messages reach the handler in stream order, and the loop ends
// when its iterator is stopped.
func TestLoop(t *testing.T) {
	n := testenv.StartNATS(t, testenv.NATSOptions{})
	_, js := n.Connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}}); err != nil {
		t.Fatal(err)
	}
	const count = 50
	for i := range count {
		if _, err := js.Publish(ctx, "t.x", fmt.Appendf(nil, "%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	cons, err := js.CreateConsumer(ctx, "T", jetstream.ConsumerConfig{AckPolicy: jetstream.AckNonePolicy})
	if err != nil {
		t.Fatal(err)
	}
	it, err := cons.Messages()
	if err != nil {
		t.Fatal(err)
	}
	defer it.Stop()
	got := make(chan string, count)
	ended := make(chan error, 1)
	go func() {
		ended <- pull.Loop(ctx, it, "test", slog.New(slog.DiscardHandler),
			func(int) time.Duration { return time.Millisecond },
			func(m jetstream.Msg) { got <- string(m.Data()) })
	}()
	for i := range count {
		select {
		case s := <-got:
			if s != fmt.Sprint(i) {
				t.Fatalf("message %d is %q: out of order", i, s)
			}
		case <-ctx.Done():
			t.Fatalf("message %d did not arrive", i)
		}
	}
	it.Stop()
	select {
	case err := <-ended:
		if err != nil {
			t.Fatalf("stopped by its caller, the loop returned %v", err)
		}
	case <-ctx.Done():
		t.Fatal("the loop did not end when its iterator was stopped")
	}
}

// TestLoopConsumerDeleted: a consumer deleted under a waiting pull ends
// its iterator for good (409 Consumer Deleted); the loop says so at once,
// rather than return as if its caller had stopped it.
func TestLoopConsumerDeleted(t *testing.T) {
	n := testenv.StartNATS(t, testenv.NATSOptions{})
	_, js := n.Connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}}); err != nil {
		t.Fatal(err)
	}
	cons, err := js.CreateConsumer(ctx, "T", jetstream.ConsumerConfig{Durable: "d", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	it, err := cons.Messages(jetstream.PullExpiry(time.Minute)) // a pull waits at the server throughout
	if err != nil {
		t.Fatal(err)
	}
	defer it.Stop()
	ended := make(chan error, 1)
	go func() {
		ended <- pull.Loop(ctx, it, "test", slog.New(slog.DiscardHandler),
			func(int) time.Duration { return time.Millisecond }, func(jetstream.Msg) {})
	}()
	testenv.Eventually(t, 10*time.Second, "the loop's pull waiting at the server", func() bool {
		info, err := cons.Info(ctx)
		return err == nil && info.NumWaiting > 0
	})
	if err := js.DeleteConsumer(ctx, "T", "d"); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-ended:
		if !errors.Is(err, pull.ErrEnded) || !errors.Is(err, jetstream.ErrConsumerDeleted) {
			t.Fatalf("the loop returned %v; want pull.ErrEnded with jetstream.ErrConsumerDeleted", err)
		}
	case <-ctx.Done():
		t.Fatal("the loop did not end when its consumer was deleted")
	}
}
