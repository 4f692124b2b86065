package webhook

import (
	"context"
	"errors"
	"testing"

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
