package events_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/internal/testenv"
)

// legacyStreams makes the command and system streams as a release before
// partitions did, each with its engine consumer, done with its work.
func legacyStreams(ctx context.Context, t *testing.T, js jetstream.JetStream, names events.Names) {
	t.Helper()
	for _, sc := range []struct{ stream, subject string }{
		{names.CommandStream(), names.Commands()}, {names.SystemStream(), names.Systems()},
	} {
		if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: sc.stream, Subjects: []string{sc.subject}}); err != nil {
			t.Fatal(err)
		}
		if _, err := js.CreateConsumer(ctx, sc.stream, jetstream.ConsumerConfig{Durable: "turnstile-engine",
			FilterSubject: sc.subject, AckPolicy: jetstream.AckExplicitPolicy}); err != nil {
			t.Fatal(err)
		}
	}
}

// start is one serve's start in a race: the P it asked for, what
// EnsureStreams answered, and the P the command stream recorded right
// after (what its engine would open with).
type start struct {
	want, opened int
	err          error
}

// checkOneP fails unless every start that succeeded runs with the P the
// streams end with (and, if it asked for one, got it), and one did.
func checkOneP(ctx context.Context, t *testing.T, js jetstream.JetStream, names events.Names, starts ...start) {
	t.Helper()
	final, err := events.ReadPartitions(ctx, js, names)
	if err != nil {
		t.Fatal(err)
	}
	ok := 0
	for _, s := range starts {
		if s.err != nil {
			if !errors.Is(s.err, events.ErrPartitions) {
				t.Errorf("start asking for %d: %v, want success or ErrPartitions", s.want, s.err)
			}
			continue
		}
		ok++
		if s.opened != final || (s.want != 0 && s.want != final) {
			t.Errorf("start asking for %d succeeded and opened with P=%d, but the streams end with P=%d: two P in play", s.want, s.opened, final)
		}
	}
	if ok == 0 {
		t.Errorf("no start succeeded: %+v", starts)
	}
	if _, err := js.Consumer(ctx, names.CommandStream(), "turnstile-partitions-claim"); !errors.Is(err, jetstream.ErrConsumerNotFound) {
		t.Errorf("the takeover's claim is left: %v", err)
	}
}

func runStart(ctx context.Context, js jetstream.JetStream, names events.Names, want int, hook func()) start {
	s := start{want: want}
	s.err = events.EnsureStreams(ctx, js, names, events.WithAfterPartitionsCheck(events.StreamOptions{Partitions: want}, hook))
	if s.err == nil {
		s.opened, s.err = events.ReadPartitions(ctx, js, names)
	}
	return s
}

// Two serves start on streams made before partitions with different P:
// both find no P recorded, then the first finishes its start while the
// second waits, then the second goes on. Before the claim both updated the
// streams and both started, the first with a P the second then replaced.
func TestPartitionsTakeoverRace(t *testing.T) {
	for _, tc := range []struct{ first, second int }{{8, 0}, {0, 8}, {8, 16}} {
		t.Run(fmt.Sprintf("%d then %d", tc.first, tc.second), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			_, js := testenv.StartNATS(t, testenv.NATSOptions{}).Connect(t)
			names := events.NewNames("")
			legacyStreams(ctx, t, js, names)
			firstChecked, secondChecked, firstDone := make(chan struct{}), make(chan struct{}), make(chan struct{})
			var onceFirst, onceSecond sync.Once
			var first, second start
			var wg sync.WaitGroup
			wg.Go(func() {
				defer close(firstDone)
				first = runStart(ctx, js, names, tc.first, func() {
					onceFirst.Do(func() {
						close(firstChecked)
						select {
						case <-secondChecked:
						case <-ctx.Done():
						}
					})
				})
			})
			wg.Go(func() {
				second = runStart(ctx, js, names, tc.second, func() {
					onceSecond.Do(func() {
						select {
						case <-firstChecked:
						case <-ctx.Done():
						}
						close(secondChecked)
						select {
						case <-firstDone:
						case <-ctx.Done():
						}
					})
				})
			})
			wg.Wait()
			if ctx.Err() != nil {
				t.Fatal("the starts did not both find the streams made before partitions")
			}
			checkOneP(ctx, t, js, names, first, second)
		})
	}
}

// The same two starts, let go together once both have found no P
// recorded: whatever the order of their claims and updates, one P.
func TestPartitionsTakeoverTogether(t *testing.T) {
	for _, tc := range []struct{ a, b int }{{8, 0}, {8, 16}, {0, 0}} {
		t.Run(fmt.Sprintf("%d and %d", tc.a, tc.b), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			_, js := testenv.StartNATS(t, testenv.NATSOptions{}).Connect(t)
			names := events.NewNames("")
			legacyStreams(ctx, t, js, names)
			var barrier sync.WaitGroup
			barrier.Add(2)
			hook := func() func() {
				var once sync.Once
				return func() { once.Do(func() { barrier.Done(); barrier.Wait() }) }
			}
			var a, b start
			var wg sync.WaitGroup
			wg.Go(func() { a = runStart(ctx, js, names, tc.a, hook()) })
			wg.Go(func() { b = runStart(ctx, js, names, tc.b, hook()) })
			wg.Wait()
			checkOneP(ctx, t, js, names, a, b)
		})
	}
}

// A takeover that claimed P and stopped before updating (killed) leaves
// its claim: a later start asking for another P is refused, one asking
// for none takes the claimed P and finishes the takeover.
func TestPartitionsClaimLeft(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, js := testenv.StartNATS(t, testenv.NATSOptions{}).Connect(t)
	names := events.NewNames("")
	legacyStreams(ctx, t, js, names)
	if _, err := js.CreateConsumer(ctx, names.CommandStream(), jetstream.ConsumerConfig{
		Durable:       "turnstile-partitions-claim",
		Description:   "Turnstile: P=8 is being set on streams made before partitions; deleted once the command stream records it",
		DeliverPolicy: jetstream.DeliverNewPolicy,
		AckPolicy:     jetstream.AckNonePolicy,
		Metadata:      map[string]string{"turnstile_partitions": "8"},
	}); err != nil {
		t.Fatal(err)
	}
	err := events.EnsureStreams(ctx, js, names, events.StreamOptions{Partitions: 16})
	if !errors.Is(err, events.ErrPartitions) {
		t.Fatalf("another P than the claim's: %v, want ErrPartitions", err)
	}
	if _, err := events.ReadPartitions(ctx, js, names); err == nil {
		t.Fatal("the refused start recorded a P")
	}
	checkOneP(ctx, t, js, names, runStart(ctx, js, names, 0, nil))
	if p, err := events.ReadPartitions(ctx, js, names); err != nil || p != 8 {
		t.Fatalf("P %d, %v; want the claim's 8", p, err)
	}
}
