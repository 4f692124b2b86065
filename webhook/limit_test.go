package webhook_test

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/internal/testenv"
	"github.com/turnstile-dev/turnstile/webhook"
)

// Concurrent adds from several serves sharing the bucket never make more
// than MaxWebhooks: with room for k, exactly k of many concurrent adds
// succeed, each stored with its consumer, and every refused one is an
// InvalidError of the url that left neither an entry nor a consumer.
func TestAddLimitHoldsUnderConcurrency(t *testing.T) {
	const (
		serves = 4  // registries, each on its own connection, as serves are
		room   = 5  // free places at the start of each round
		adders = 20 // concurrent adds per round
		rounds = 4
	)
	core := testenv.StartCore(t, testenv.CoreOptions{})
	ctx := t.Context()
	n := events.NewNames("")
	regs := make([]*webhook.Registry, serves)
	for i := range regs {
		_, js := core.Connect(t)
		store, err := events.OpenStore(ctx, js, n, events.Codec{})
		if err != nil {
			t.Fatal(err)
		}
		if regs[i], err = webhook.OpenRegistry(ctx, js, store, webhook.RegistryOptions{Memory: true}); err != nil {
			t.Fatal(err)
		}
	}
	st, err := core.JS.Stream(ctx, n.EventStream())
	if err != nil {
		t.Fatal(err)
	}
	// stored is the set of webhooks the bucket holds, checked against the
	// set of webhook consumers: neither may have one the other lacks.
	stored := func(t *testing.T) map[string]bool {
		t.Helper()
		list, err := regs[0].List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		ids := map[string]bool{}
		for _, in := range list {
			ids[in.ID] = true
		}
		cons := map[string]bool{}
		names := st.ConsumerNames(ctx)
		for name := range names.Name() {
			if id, ok := strings.CutPrefix(name, "webhook-"); ok {
				cons[id] = true
			}
		}
		if err := names.Err(); err != nil {
			t.Fatal(err)
		}
		if !maps.Equal(ids, cons) {
			t.Fatalf("webhooks %v, but webhook consumers %v", slices.Sorted(maps.Keys(ids)), slices.Sorted(maps.Keys(cons)))
		}
		return ids
	}

	for i := range webhook.MaxWebhooks - room {
		if _, err := regs[i%serves].Add(ctx, webhook.Spec{URL: fmt.Sprintf("https://hooks.example.com/fill/%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	for round := range rounds {
		before := stored(t)
		if len(before) != webhook.MaxWebhooks-room {
			t.Fatalf("round %d starts with %d webhooks, want %d", round, len(before), webhook.MaxWebhooks-room)
		}
		added := make([]webhook.Webhook, adders)
		errs := make([]error, adders)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for g := range adders {
			wg.Go(func() {
				<-start
				added[g], errs[g] = regs[g%serves].Add(ctx, webhook.Spec{URL: fmt.Sprintf("https://hooks.example.com/%d/%d", round, g)})
			})
		}
		close(start)
		wg.Wait()

		var won []string
		for g, err := range errs {
			var ie *webhook.InvalidError
			switch {
			case err == nil:
				won = append(won, added[g].ID)
			case !errors.As(err, &ie) || ie.Field != "url":
				t.Fatalf("round %d add %d: %v, want success or an InvalidError of url", round, g, err)
			}
		}
		after := stored(t)
		if len(after) > webhook.MaxWebhooks {
			t.Fatalf("round %d: %d webhooks stored, more than MaxWebhooks %d (%d adds succeeded)", round, len(after), webhook.MaxWebhooks, len(won))
		}
		if len(won) != room {
			t.Fatalf("round %d: %d of %d adds succeeded with room for %d", round, len(won), adders, room)
		}
		// Exactly the webhooks before and the added ones: a refused add
		// left no entry (and, by stored, no consumer).
		want := maps.Clone(before)
		for _, id := range won {
			want[id] = true
			if _, err := regs[0].Get(ctx, id); err != nil {
				t.Fatalf("round %d: added webhook %s: %v", round, id, err)
			}
		}
		if !maps.Equal(after, want) {
			t.Fatalf("round %d: stored %v, want the %d before and the added %v", round, slices.Sorted(maps.Keys(after)), len(before), won)
		}
		// Make room again: remove as many as were added, from another
		// serve than the one that added them.
		for i, id := range won {
			if err := regs[(i+1)%serves].Remove(ctx, id); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// An add refused at the limit writes nothing to the bucket: each entry
// taken back would leave a purge marker in its stream for good, which
// every later read of the bucket goes through, so a client retrying at
// the limit would grow it without bound.
func TestAddAtTheLimitWritesNothing(t *testing.T) {
	core := testenv.StartCore(t, testenv.CoreOptions{})
	ctx := t.Context()
	reg, err := webhook.OpenRegistry(ctx, core.JS, core.Store, webhook.RegistryOptions{Memory: true})
	if err != nil {
		t.Fatal(err)
	}
	for i := range webhook.MaxWebhooks {
		if _, err := reg.Add(ctx, webhook.Spec{URL: fmt.Sprintf("https://hooks.example.com/fill/%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	st, err := core.JS.Stream(ctx, "KV_"+webhook.BucketName(events.NewNames("")))
	if err != nil {
		t.Fatal(err)
	}
	lastSeq := func() uint64 {
		t.Helper()
		info, err := st.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return info.State.LastSeq
	}
	before := lastSeq()
	for i := range 10 {
		var ie *webhook.InvalidError
		if _, err := reg.Add(ctx, webhook.Spec{URL: fmt.Sprintf("https://hooks.example.com/over/%d", i)}); !errors.As(err, &ie) || ie.Field != "url" {
			t.Fatalf("add %d past the limit: %v, want an InvalidError of url", i, err)
		}
	}
	if after := lastSeq(); after != before {
		t.Fatalf("10 refused adds moved the bucket's stream from sequence %d to %d, want no write", before, after)
	}
}
