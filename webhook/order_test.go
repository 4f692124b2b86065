package webhook_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/internal/testenv"
	"github.com/turnstile-dev/turnstile/webhook"
)

// holdConsumer holds an Add at its consumer's creation until release is
// closed; reached is closed when it gets there.
type holdConsumer struct {
	jetstream.JetStream
	once             *sync.Once
	reached, release chan struct{}
}

func (h holdConsumer) CreateConsumer(ctx context.Context, stream string, cfg jetstream.ConsumerConfig) (jetstream.Consumer, error) {
	h.once.Do(func() { close(h.reached) })
	select {
	case <-h.release:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return h.JetStream.CreateConsumer(ctx, stream, cfg)
}

// heldRegistry is a registry whose Adds stop at their consumer until
// hold.release is closed (hold.reached: the first got there).
func (f *fixture) heldRegistry(t *testing.T) (holdConsumer, *webhook.Registry) {
	t.Helper()
	hold := holdConsumer{JetStream: f.core.JS, once: &sync.Once{}, reached: make(chan struct{}), release: make(chan struct{})}
	addStore, err := events.OpenStore(t.Context(), hold, f.names, events.Codec{})
	if err != nil {
		t.Fatal(err)
	}
	reg, err := webhook.OpenRegistry(t.Context(), f.core.JS, addStore, webhook.RegistryOptions{AllowPrivate: true, Memory: true})
	if err != nil {
		t.Fatal(err)
	}
	return hold, reg
}

// seeMissing reports each consumer it found missing.
type seeMissing struct {
	jetstream.JetStream
	missing chan string
}

func (s seeMissing) Consumer(ctx context.Context, stream, name string) (jetstream.Consumer, error) {
	c, err := s.JetStream.Consumer(ctx, stream, name)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		select {
		case s.missing <- name:
		default:
		}
	}
	return c, err
}

// An Add stores its entry before it makes its consumer (so no consumer
// ever stands without its entry): while the consumer is not made yet the
// webhook is listed, and a running dispatcher, which finds no consumer
// for it, delivers to it once the Add is done.
func TestAddStoresTheEntryBeforeTheConsumer(t *testing.T) {
	f := newFixture(t)
	ctx := t.Context()
	hold, reg := f.heldRegistry(t)
	see := seeMissing{JetStream: f.core.JS, missing: make(chan string, 16)}
	dStore, err := events.OpenStore(ctx, see, f.names, events.Codec{})
	if err != nil {
		t.Fatal(err)
	}
	d, err := webhook.New(webhook.Config{Store: dStore, Registry: reg, AllowPrivate: true,
		AttemptTimeout: 5 * time.Second, MinBackoff: 5 * time.Millisecond, MaxBackoff: 50 * time.Millisecond,
		Logger: testenv.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Open(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close() })

	rcv := newReceiver(t, modeOK)
	type added struct {
		h   webhook.Webhook
		err error
	}
	done := make(chan added, 1)
	go func() {
		h, err := reg.Add(ctx, webhook.Spec{URL: rcv.URL})
		done <- added{h, err}
	}()
	select {
	case <-hold.reached:
	case a := <-done:
		t.Fatalf("add returned without making a consumer: %+v", a)
	case <-time.After(30 * time.Second):
		t.Fatal("the add never came to its consumer")
	}
	list, err := reg.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 {
		t.Fatalf("list while the consumer is being made: %+v, want the webhook's entry", list)
	}
	id := list[0].ID
	// The dispatcher follows the entry, and finds no consumer yet.
	deadline := time.After(30 * time.Second)
	for seen := false; !seen; {
		select {
		case name := <-see.missing:
			seen = name == webhook.Durable(id)
		case <-deadline:
			t.Fatalf("the dispatcher never looked for %s", webhook.Durable(id))
		}
	}
	close(hold.release)
	a := <-done
	if a.err != nil {
		t.Fatal(a.err)
	}
	if a.h.ID != id {
		t.Fatalf("added %s, listed %s", a.h.ID, id)
	}
	rcv.setSecret(a.h.Secret)
	f.send(t, fsm.Create, "late")
	want := f.eventSeqs(t, 0)
	testenv.Eventually(t, 30*time.Second, "the create to be delivered", func() bool { return len(rcv.seqs()) == 1 })
	if got := rcv.seqs(); got[0] != want[len(want)-1] {
		t.Fatalf("delivered %v, want %v", got, want[len(want)-1:])
	}
}

// A remove of a webhook whose Add is still making its consumer (its id
// is listed from the entry on) is not undone by the Add: the Add, which
// finds its entry gone once the consumer is made, deletes the consumer
// and answers ErrNotFound, with no secret for a webhook that is gone.
func TestRemoveDuringAddLeavesNoConsumer(t *testing.T) {
	f := newFixture(t)
	ctx := t.Context()
	hold, reg := f.heldRegistry(t)
	type added struct {
		h   webhook.Webhook
		err error
	}
	done := make(chan added, 1)
	go func() {
		h, err := reg.Add(ctx, webhook.Spec{URL: "https://hooks.example.com/x"})
		done <- added{h, err}
	}()
	select {
	case <-hold.reached:
	case a := <-done:
		t.Fatalf("add returned without making a consumer: %+v", a)
	case <-time.After(30 * time.Second):
		t.Fatal("the add never came to its consumer")
	}
	list, err := f.reg.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 {
		t.Fatalf("list while the consumer is being made: %+v, want the webhook's entry", list)
	}
	id := list[0].ID
	if err := f.reg.Remove(ctx, id); err != nil {
		t.Fatalf("remove %s during its add: %v", id, err)
	}
	close(hold.release)
	a := <-done
	if !errors.Is(a.err, webhook.ErrNotFound) || a.h.Secret != "" {
		t.Fatalf("add whose webhook was removed meanwhile: %+v, %v; want ErrNotFound and no secret", a.h, a.err)
	}
	if f.consumerExists(t, id) {
		t.Fatalf("consumer %s stands without its entry", webhook.Durable(id))
	}
	if list, err := f.reg.List(ctx); err != nil || len(list) != 0 {
		t.Fatalf("list after: %+v, %v; want none", list, err)
	}
}
