package events_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/internal/testenv"
)

// P is fixed at install: a start asking for another is refused with
// ErrPartitions and changes nothing; a start that asks for none takes the
// streams'; P out of range is refused before anything is made.
func TestPartitionsFixedAtInstall(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, js := testenv.StartNATS(t, testenv.NATSOptions{}).Connect(t)
	names := events.NewNames("")
	for _, bad := range []int{-1, events.MaxPartitions + 1} {
		if err := events.EnsureStreams(ctx, js, names, events.StreamOptions{Partitions: bad}); err == nil {
			t.Fatalf("%d partitions accepted", bad)
		}
	}
	if _, err := js.Stream(ctx, names.CommandStream()); !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Fatalf("a refused P left a stream behind: %v", err)
	}
	if err := events.EnsureStreams(ctx, js, names, events.StreamOptions{Partitions: 4}); err != nil {
		t.Fatal(err)
	}
	err := events.EnsureStreams(ctx, js, names, events.StreamOptions{Partitions: 8})
	if !errors.Is(err, events.ErrPartitions) {
		t.Fatalf("another P: %v, want ErrPartitions", err)
	}
	if err := events.EnsureStreams(ctx, js, names, events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	if p, err := events.ReadPartitions(ctx, js, names); err != nil || p != 4 {
		t.Fatalf("P %d, %v; want the install's 4", p, err)
	}
}

// Streams made before partitions (subjects cmd.>, one engine consumer
// reading all) are taken over when that consumer has nothing left: it is
// deleted and the transform applied. One with commands still to decide
// makes the start refuse, touching neither stream.
func TestPartitionsUpgrade(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, js := testenv.StartNATS(t, testenv.NATSOptions{}).Connect(t)
	names := events.NewNames("")
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
	if _, err := js.Publish(ctx, names.Command("old"), []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	err := events.EnsureStreams(ctx, js, names, events.StreamOptions{})
	if err == nil || !strings.Contains(err.Error(), "made before partitions") {
		t.Fatalf("an undecided command before partitions: %v, want a refusal", err)
	}
	for _, stream := range []string{names.CommandStream(), names.SystemStream()} {
		if _, err := js.Consumer(ctx, stream, "turnstile-engine"); err != nil {
			t.Fatalf("%s: the refusal deleted the old consumer: %v", stream, err)
		}
	}
	// The old engine decides it.
	cons, err := js.Consumer(ctx, names.CommandStream(), "turnstile-engine")
	if err != nil {
		t.Fatal(err)
	}
	batch, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for m := range batch.Messages() {
		if err := m.DoubleAck(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if err := events.EnsureStreams(ctx, js, names, events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, stream := range []string{names.CommandStream(), names.SystemStream()} {
		if _, err := js.Consumer(ctx, stream, "turnstile-engine"); !errors.Is(err, jetstream.ErrConsumerNotFound) {
			t.Fatalf("%s: the old consumer is still there: %v", stream, err)
		}
	}
	if p, err := events.ReadPartitions(ctx, js, names); err != nil || p != events.DefaultPartitions {
		t.Fatalf("P %d, %v", p, err)
	}
	ack, err := js.Publish(ctx, names.Command("new"), []byte(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	msg, err := js.Stream(ctx, names.CommandStream())
	if err != nil {
		t.Fatal(err)
	}
	raw, err := msg.GetMsg(ctx, ack.Sequence)
	if err != nil {
		t.Fatal(err)
	}
	if k, ok := names.PartitionOf(raw.Subject); !ok || k != events.Partition("new", events.DefaultPartitions) {
		t.Fatalf("stored as %s", raw.Subject)
	}
}
