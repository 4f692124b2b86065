package webhook

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/internal/testenv"
)

// natsGone makes NATS unreachable the moment the server has made a
// consumer, before its answer comes back: the create fails and so does
// every deletion or write after it, until down is cleared.
type natsGone struct {
	jetstream.JetStream
	down *atomic.Bool
}

func (g natsGone) CreateConsumer(ctx context.Context, stream string, cfg jetstream.ConsumerConfig) (jetstream.Consumer, error) {
	if _, err := g.JetStream.CreateConsumer(ctx, stream, cfg); err != nil {
		return nil, err
	}
	g.down.Store(true)
	return nil, nats.ErrConnectionClosed
}

func (g natsGone) DeleteConsumer(ctx context.Context, stream, name string) error {
	if g.down.Load() {
		return nats.ErrConnectionClosed
	}
	return g.JetStream.DeleteConsumer(ctx, stream, name)
}

type kvGone struct {
	jetstream.KeyValue
	down *atomic.Bool
}

func (g kvGone) Purge(ctx context.Context, key string, opts ...jetstream.KVDeleteOpt) error {
	if g.down.Load() {
		return nats.ErrConnectionClosed
	}
	return g.KeyValue.Purge(ctx, key, opts...)
}

// webhookConsumers are the ids of the webhook consumers on the event
// stream.
func webhookConsumers(t *testing.T, js jetstream.JetStream) []string {
	t.Helper()
	st, err := js.Stream(t.Context(), events.NewNames("").EventStream())
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	names := st.ConsumerNames(t.Context())
	for name := range names.Name() {
		if id, ok := strings.CutPrefix(name, "webhook-"); ok {
			ids = append(ids, id)
		}
	}
	if err := names.Err(); err != nil {
		t.Fatal(err)
	}
	return ids
}

// An Add whose consumer was made but whose answer was lost, and whose
// undo then failed too (NATS gone), leaves its entry with the consumer:
// the webhook is listed, and removing it takes both. (Made consumer
// first, the undo used to leave a consumer with no entry, which no list
// showed and no remove could take.)
func TestFailedUndoLeavesWhatRemoveTakes(t *testing.T) {
	core := testenv.StartCore(t, testenv.CoreOptions{})
	var down atomic.Bool
	store, err := events.OpenStore(t.Context(), natsGone{JetStream: core.JS, down: &down}, events.NewNames(""), events.Codec{})
	if err != nil {
		t.Fatal(err)
	}
	r, err := OpenRegistry(t.Context(), core.JS, store, RegistryOptions{Memory: true})
	if err != nil {
		t.Fatal(err)
	}
	r.kv = kvGone{KeyValue: r.kv, down: &down}
	if _, err := r.Add(t.Context(), Spec{URL: "https://hooks.example.com/x"}); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("add: %v, want ErrUnavailable", err)
	}
	left := webhookConsumers(t, core.JS)
	if len(left) != 1 {
		t.Fatalf("webhook consumers after the failed undo: %v, want the one the add made", left)
	}
	id := left[0]
	down.Store(false) // NATS is back

	list, err := r.List(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].ID != id {
		t.Fatalf("list: %+v, want webhook %s, whose consumer stands", list, id)
	}
	if err := r.Remove(t.Context(), id); err != nil {
		t.Fatalf("remove %s: %v", id, err)
	}
	if left := webhookConsumers(t, core.JS); len(left) != 0 {
		t.Fatalf("webhook consumers after remove: %v", left)
	}
	if _, err := r.Get(t.Context(), id); !errors.Is(err, ErrNotFound) {
		t.Fatalf("entry after remove: %v, want ErrNotFound", err)
	}
}

// A webhook consumer without an entry (left by an Add of an earlier
// version) is removed by its id; an id with neither is ErrNotFound, and
// so is the second remove.
func TestRemoveTakesAConsumerWithoutEntry(t *testing.T) {
	core := testenv.StartCore(t, testenv.CoreOptions{})
	r, err := OpenRegistry(t.Context(), core.JS, core.Store, RegistryOptions{Memory: true})
	if err != nil {
		t.Fatal(err)
	}
	const id = "wh-0123456789abcdef"
	if err := core.Store.CreateEventConsumer(t.Context(), events.DurableConfig{Durable: Durable(id), AckWait: AckWait, MaxAckPending: 1}, nil); err != nil {
		t.Fatal(err)
	}
	if err := r.Remove(t.Context(), "wh-fedcba9876543210"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("remove of an id with neither entry nor consumer: %v, want ErrNotFound", err)
	}
	if err := r.Remove(t.Context(), id); err != nil {
		t.Fatalf("remove of the consumer without entry: %v", err)
	}
	if left := webhookConsumers(t, core.JS); len(left) != 0 {
		t.Fatalf("webhook consumers after remove: %v", left)
	}
	if err := r.Remove(t.Context(), id); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second remove: %v, want ErrNotFound", err)
	}
}
