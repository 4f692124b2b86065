package webhook_test

import (
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/internal/testenv"
	"github.com/turnstile-dev/turnstile/webhook"
)

// shortTTL is the marker TTL of these tests: the server's least.
const shortTTL = time.Second

// bucketMsgs is how many messages the webhook bucket's stream holds
// (entries and markers).
func bucketMsgs(t *testing.T, js jetstream.JetStream, n events.Names) uint64 {
	t.Helper()
	st, err := js.Stream(t.Context(), "KV_"+webhook.BucketName(n))
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

// addRemove adds a webhook and removes it, leaving its purge marker.
func addRemove(t *testing.T, reg *webhook.Registry) webhook.Webhook {
	t.Helper()
	h, err := reg.Add(t.Context(), webhook.Spec{URL: "https://hooks.example.com/x"})
	if err != nil {
		t.Fatal(err)
	}
	if err := reg.Remove(t.Context(), h.ID); err != nil {
		t.Fatal(err)
	}
	return h
}

// A remove's purge marker leaves the bucket once its TTL has passed:
// removed webhooks no longer pile up in the bucket for good.
func TestRemoveMarkerExpires(t *testing.T) {
	core := testenv.StartCore(t, testenv.CoreOptions{})
	n := events.NewNames("")
	reg, err := webhook.OpenRegistry(t.Context(), core.JS, core.Store, webhook.RegistryOptions{Memory: true, MarkerTTL: shortTTL})
	if err != nil {
		t.Fatal(err)
	}
	h := addRemove(t, reg)
	if got := bucketMsgs(t, core.JS, n); got != 1 {
		t.Fatalf("the bucket holds %d messages right after the remove, want its marker", got)
	}
	testenv.Eventually(t, 30*time.Second, "the purge marker to expire", func() bool { return bucketMsgs(t, core.JS, n) == 0 })
	if _, err := reg.Get(t.Context(), h.ID); !errors.Is(err, webhook.ErrNotFound) {
		t.Fatalf("get after the marker expired: %v, want ErrNotFound", err)
	}
	if err := reg.Remove(t.Context(), h.ID); !errors.Is(err, webhook.ErrNotFound) {
		t.Fatalf("remove after the marker expired: %v, want ErrNotFound", err)
	}
	if list, err := reg.List(t.Context()); err != nil || len(list) != 0 {
		t.Fatalf("list after the marker expired: %+v %v", list, err)
	}
}

// A bucket made by an earlier version (no marker TTL) is updated in
// place when the registry opens it: later removes' markers expire, and
// the markers it held, which carry no TTL, are cleared once older than
// the TTL.
func TestOpenRegistryUpdatesAnOldBucket(t *testing.T) {
	core := testenv.StartCore(t, testenv.CoreOptions{})
	n := events.NewNames("")
	ctx := t.Context()
	// The configuration OpenRegistry used before markers expired.
	old, err := core.JS.CreateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      webhook.BucketName(n),
		Description: "Turnstile webhooks and their signing secrets: serve's connections only",
		History:     1,
		Storage:     jetstream.FileStorage, // serve's
	})
	if err != nil {
		t.Fatal(err)
	}
	// A webhook an earlier version added and removed: its marker has no TTL.
	if _, err := old.Create(ctx, "wh-0123456789abcdef", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	if err := old.Purge(ctx, "wh-0123456789abcdef"); err != nil {
		t.Fatal(err)
	}
	if err := old.Purge(ctx, "wh-0123456789abcdee", jetstream.PurgeTTL(time.Hour)); err == nil {
		t.Fatal("a marker with a TTL in the old bucket: want the server's refusal")
	}

	// Opened now, the old marker is younger than the TTL: it stays.
	if _, err := webhook.OpenRegistry(ctx, core.JS, core.Store, webhook.RegistryOptions{MarkerTTL: time.Hour}); err != nil {
		t.Fatal(err)
	}
	kv, err := core.JS.KeyValue(ctx, webhook.BucketName(n))
	if err != nil {
		t.Fatal(err)
	}
	st, err := kv.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.LimitMarkerTTL() != time.Hour {
		t.Fatalf("marker TTL of the updated bucket: %v, want 1h", st.LimitMarkerTTL())
	}
	if got := bucketMsgs(t, core.JS, n); got != 1 {
		t.Fatalf("the bucket holds %d messages after an open within the TTL, want the old marker", got)
	}

	// Opened two hours later, it is cleared; and this registry's own
	// markers expire.
	later := func() time.Time { return time.Now().Add(2 * time.Hour) }
	reg, err := webhook.OpenRegistry(ctx, core.JS, core.Store, webhook.RegistryOptions{MarkerTTL: shortTTL, Now: later})
	if err != nil {
		t.Fatal(err)
	}
	if got := bucketMsgs(t, core.JS, n); got != 0 {
		t.Fatalf("the bucket holds %d messages after an open past the TTL, want none", got)
	}
	kept, err := reg.Add(ctx, webhook.Spec{URL: "https://hooks.example.com/kept"})
	if err != nil {
		t.Fatal(err)
	}
	addRemove(t, reg)
	testenv.Eventually(t, 30*time.Second, "the new marker to expire", func() bool { return bucketMsgs(t, core.JS, n) == 1 })
	if list, err := reg.List(ctx); err != nil || len(list) != 1 || list[0].ID != kept.ID {
		t.Fatalf("list: %+v %v, want only %s", list, err, kept.ID)
	}
}

// A serve started after a removed webhook's marker expired sees no such
// webhook: it delivers nothing to it, lists it not, and its consumer is
// gone.
func TestStartAfterTheMarkerExpired(t *testing.T) {
	f := newFixture(t)
	ctx := t.Context()
	reg, err := webhook.OpenRegistry(ctx, f.core.JS, f.core.Store, webhook.RegistryOptions{AllowPrivate: true, Memory: true, MarkerTTL: shortTTL})
	if err != nil {
		t.Fatal(err)
	}
	gone, kept := newReceiver(t, modeOK), newReceiver(t, modeOK)
	hg, err := reg.Add(ctx, webhook.Spec{URL: gone.URL})
	if err != nil {
		t.Fatal(err)
	}
	gone.setSecret(hg.Secret)
	hk, err := reg.Add(ctx, webhook.Spec{URL: kept.URL})
	if err != nil {
		t.Fatal(err)
	}
	kept.setSecret(hk.Secret)
	if err := reg.Remove(ctx, hg.ID); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, "the purge marker to expire", func() bool { return bucketMsgs(t, f.core.JS, f.names) == 1 })

	// The new serve: a registry opened on the bucket, and its dispatcher.
	f.reg, err = webhook.OpenRegistry(ctx, f.core.JS, f.core.Store, webhook.RegistryOptions{AllowPrivate: true, Memory: true, MarkerTTL: shortTTL})
	if err != nil {
		t.Fatal(err)
	}
	f.dispatcher(t, prometheus.NewRegistry())
	f.send(t, fsm.Create, "m1")
	testenv.Eventually(t, 30*time.Second, "the kept webhook to get the create", func() bool { return len(kept.seqs()) == 1 })
	if n := gone.tries(); n != 0 {
		t.Fatalf("the removed webhook was called %d times", n)
	}
	if f.consumerExists(t, hg.ID) {
		t.Fatal("the removed webhook's consumer is there")
	}
	if list, err := f.reg.List(ctx); err != nil || len(list) != 1 || list[0].ID != hk.ID {
		t.Fatalf("list: %+v %v, want only %s", list, err, hk.ID)
	}
	if err := f.reg.Remove(ctx, hg.ID); !errors.Is(err, webhook.ErrNotFound) {
		t.Fatalf("remove of the removed webhook: %v, want ErrNotFound", err)
	}
}
