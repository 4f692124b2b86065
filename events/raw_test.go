package events_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/internal/testenv"
)

// ReadRaw hands on messages 1..through in order, undecoded, and stops at
// through, at fn's error, passing holes; Tail follows the stream live.
func TestRawReads(t *testing.T) {
	n := testenv.StartNATS(t, testenv.NATSOptions{})
	_, js := n.Connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	names := events.NewNames("")
	if err := events.EnsureStreams(ctx, js, names, events.StreamOptions{Memory: true}); err != nil {
		t.Fatal(err)
	}
	store, err := events.OpenStore(ctx, js, names, events.Codec{})
	if err != nil {
		t.Fatal(err)
	}
	publish := func(i int) {
		t.Helper()
		subject := names.Event(fmt.Sprintf("ws-%d", i%3))
		if i%2 == 0 {
			subject = names.Outcome(fmt.Sprintf("c%d", i))
		}
		if _, err := js.Publish(ctx, subject, fmt.Appendf(nil, "m%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	for i := 1; i <= 10; i++ {
		publish(i)
	}
	if st, err := store.State(ctx); err != nil || st.FirstSeq != 1 || st.LastSeq != 10 || st.Msgs != 10 || st.Deleted != 0 {
		t.Fatalf("state %+v, %v; want 1..10", st, err)
	}
	if at, err := store.StoredAt(ctx, 1); err != nil || at.IsZero() {
		t.Fatalf("stored at %v, %v", at, err)
	}

	t.Run("ReadRaw", func(t *testing.T) {
		var got []uint64
		err := store.ReadRaw(ctx, 7, func(m events.RawMsg) error {
			if want := fmt.Sprintf("m%d", m.StreamSeq); string(m.Data) != want {
				t.Errorf("message %d holds %q, want %q", m.StreamSeq, m.Data, want)
			}
			got = append(got, m.StreamSeq)
			return nil
		})
		if err != nil || fmt.Sprint(got) != "[1 2 3 4 5 6 7]" {
			t.Fatalf("read %v, %v; want 1..7", got, err)
		}
		if err := store.ReadRaw(ctx, 0, func(events.RawMsg) error { return errors.New("called") }); err != nil {
			t.Fatalf("reading nothing: %v", err)
		}
	})

	t.Run("StopsAtFnError", func(t *testing.T) {
		stop := errors.New("stop")
		calls := 0
		err := store.ReadRaw(ctx, 10, func(m events.RawMsg) error {
			if calls++; m.StreamSeq == 4 {
				return stop
			}
			return nil
		})
		if !errors.Is(err, stop) || calls != 4 {
			t.Fatalf("got %v after %d calls; want the fn's error after 4", err, calls)
		}
	})

	t.Run("Tail", func(t *testing.T) {
		tail, err := store.Tail(ctx, 5, 16)
		if err != nil {
			t.Fatal(err)
		}
		defer tail.Stop()
		m, err := tail.Next(ctx)
		if err != nil || m.StreamSeq != 5 || m.Pending != 5 || string(m.Data) != "m5" {
			t.Fatalf("first %+v, %v; want 5 with 5 pending", m, err)
		}
		for want := uint64(6); want <= 10; want++ {
			if m, ok, err := tail.NextWithin(ctx, 10*time.Second); err != nil || !ok || m.StreamSeq != want {
				t.Fatalf("got %d (%v, %v), want %d", m.StreamSeq, ok, err, want)
			}
		}
		if m, ok, err := tail.NextWithin(ctx, 50*time.Millisecond); err != nil || ok {
			t.Fatalf("past the end: %+v, %v, %v; want nothing", m, ok, err)
		}
		// A wait ends with its context, not at its deadline: the
		// projector's batch wait must not hold a session's teardown.
		cctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() {
			_, _, err := tail.NextWithin(cctx, time.Hour)
			done <- err
		}()
		cancel()
		select {
		case err := <-done:
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("cancelled wait: %v; want context.Canceled", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a cancelled wait did not return in 10 s")
		}
		publish(11)
		if m, err := tail.Next(ctx); err != nil || m.StreamSeq != 11 || m.Pending != 0 {
			t.Fatalf("appended later: %+v, %v", m, err)
		}
	})

	// An expired outcome leaves a hole: ReadRaw passes it (its reader
	// judges what is missing), the end included, and ends without waiting
	// for a message that will never come.
	t.Run("PassesHoles", func(t *testing.T) {
		stream, err := js.Stream(ctx, names.EventStream())
		if err != nil {
			t.Fatal(err)
		}
		for _, seq := range []uint64{3, 11} {
			if err := stream.DeleteMsg(ctx, seq); err != nil {
				t.Fatal(err)
			}
		}
		if at, err := store.StoredAt(ctx, 3); err != nil || at.IsZero() {
			t.Fatalf("stored at of a hole: %v, %v; want the next message's", at, err)
		}
		var got []uint64
		err = store.ReadRaw(ctx, 11, func(m events.RawMsg) error {
			got = append(got, m.StreamSeq)
			return nil
		})
		if err != nil || fmt.Sprint(got) != "[1 2 4 5 6 7 8 9 10]" {
			t.Fatalf("read %v, %v; want 1..10 without 3", got, err)
		}
		for _, c := range []struct{ after, before, want uint64 }{
			{0, 4, 1}, {2, 4, 1}, {3, 5, 0}, {4, 5, 0}, {0, 11, 1}, {9, 12, 1}, {2, 12, 2},
		} {
			if got, err := store.Missing(ctx, c.after, c.before); err != nil || got != c.want {
				t.Errorf("missing between %d and %d: %d, %v; want %d", c.after, c.before, got, err, c.want)
			}
		}
		for _, seq := range []uint64{1, 2} {
			if err := stream.DeleteMsg(ctx, seq); err != nil {
				t.Fatal(err)
			}
		}
		err = store.ReadRaw(ctx, 3, func(m events.RawMsg) error { return fmt.Errorf("called with %d", m.StreamSeq) })
		if err != nil {
			t.Fatalf("reading through 3 of a stream that starts at 4: %v", err)
		}
		if got, err := store.Missing(ctx, 0, 5); err != nil || got != 3 {
			t.Fatalf("missing before 5 of a stream that starts at 4: %d, %v; want 3", got, err)
		}
	})
}
