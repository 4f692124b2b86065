package webhook

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/internal/testenv"
)

// cancelOnPurge ends the caller's context right after a purge: the HTTP
// client of DELETE /v1/webhooks/{id} hanging up halfway.
type cancelOnPurge struct {
	jetstream.KeyValue
	cancel context.CancelFunc
}

func (c cancelOnPurge) Purge(ctx context.Context, key string, opts ...jetstream.KVDeleteOpt) error {
	err := c.KeyValue.Purge(ctx, key, opts...)
	c.cancel()
	return err
}

// A remove whose caller goes away halfway still takes both the entry and
// the consumer: a consumer left without its entry could never be removed
// (rm answers 404) and is not counted against MaxWebhooks.
func TestRemoveFinishesWhenTheCallerLeaves(t *testing.T) {
	core := testenv.StartCore(t, testenv.CoreOptions{})
	n := events.NewNames("")
	r, err := OpenRegistry(t.Context(), core.JS, core.Store, RegistryOptions{Memory: true})
	if err != nil {
		t.Fatal(err)
	}
	h, err := r.Add(t.Context(), Spec{URL: "https://hooks.example.com/x"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	r.kv = cancelOnPurge{KeyValue: r.kv, cancel: cancel}
	_ = r.Remove(ctx, h.ID) // the caller is gone: what it is told does not matter

	if _, err := core.JS.Consumer(t.Context(), n.EventStream(), Durable(h.ID)); !errors.Is(err, jetstream.ErrConsumerNotFound) {
		t.Fatalf("consumer of the removed webhook: %v, want not found", err)
	}
	if _, err := r.Get(t.Context(), h.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("entry of the removed webhook: %v, want ErrNotFound", err)
	}
}

// gate holds the first call it is put on until release is closed;
// reached is closed when that call gets there.
type gate struct {
	once             *sync.Once
	reached, release chan struct{}
}

func newGate() gate {
	return gate{once: &sync.Once{}, reached: make(chan struct{}), release: make(chan struct{})}
}

func (g gate) wait(ctx context.Context) error {
	g.once.Do(func() { close(g.reached) })
	select {
	case <-g.release:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (g gate) await(t *testing.T, what string) {
	t.Helper()
	select {
	case <-g.reached:
	case <-time.After(30 * time.Second):
		t.Fatalf("%s never came", what)
	}
}

type gateConsumer struct {
	jetstream.JetStream
	gate
}

func (g gateConsumer) CreateConsumer(ctx context.Context, stream string, cfg jetstream.ConsumerConfig) (jetstream.Consumer, error) {
	if err := g.wait(ctx); err != nil {
		return nil, err
	}
	return g.JetStream.CreateConsumer(ctx, stream, cfg)
}

type gatePurge struct {
	jetstream.KeyValue
	gate
}

func (g gatePurge) Purge(ctx context.Context, key string, opts ...jetstream.KVDeleteOpt) error {
	if err := g.wait(ctx); err != nil {
		return err
	}
	return g.KeyValue.Purge(ctx, key, opts...)
}

// A remove whose consumer deletion comes before the consumer of an Add
// in progress, and whose purge after the Add has read its entry back,
// deletes that consumer after the purge: the Add answered success, and
// the webhook is gone, consumer and all.
func TestRemoveDeletesTheConsumerOfAnAddAfterItsPurge(t *testing.T) {
	core := testenv.StartCore(t, testenv.CoreOptions{})
	ctx := t.Context()
	n := events.NewNames("")
	addGate := newGate()
	addStore, err := events.OpenStore(ctx, gateConsumer{JetStream: core.JS, gate: addGate}, n, events.Codec{})
	if err != nil {
		t.Fatal(err)
	}
	adder, err := OpenRegistry(ctx, core.JS, addStore, RegistryOptions{Memory: true})
	if err != nil {
		t.Fatal(err)
	}
	remover, err := OpenRegistry(ctx, core.JS, core.Store, RegistryOptions{Memory: true})
	if err != nil {
		t.Fatal(err)
	}
	purgeGate := newGate()
	remover.kv = gatePurge{KeyValue: remover.kv, gate: purgeGate}

	added := make(chan error, 1)
	go func() {
		_, err := adder.Add(ctx, Spec{URL: "https://hooks.example.com/x"})
		added <- err
	}()
	addGate.await(t, "the add's consumer")
	list, err := remover.List(ctx)
	if err != nil || len(list) != 1 {
		t.Fatalf("list during the add: %+v, %v; want its entry", list, err)
	}
	id := list[0].ID
	removed := make(chan error, 1)
	go func() { removed <- remover.Remove(ctx, id) }()
	purgeGate.await(t, "the remove's purge") // its consumer deletion is done
	close(addGate.release)
	if err := <-added; err != nil {
		t.Fatalf("add, its entry still there: %v", err)
	}
	close(purgeGate.release)
	if err := <-removed; err != nil {
		t.Fatalf("remove: %v", err)
	}
	if left := webhookConsumers(t, core.JS); len(left) != 0 {
		t.Fatalf("webhook consumers after remove: %v, want none", left)
	}
	if _, err := remover.Get(ctx, id); !errors.Is(err, ErrNotFound) {
		t.Fatalf("entry after remove: %v, want ErrNotFound", err)
	}
}
