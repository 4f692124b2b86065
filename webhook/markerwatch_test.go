package webhook

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/turnstile-dev/turnstile/internal/testenv"
)

// blindToPurges is a bucket whose watches never show a purge: a watch
// whose connection was cut for longer than the marker TTL, which resumes
// past the expired marker.
type blindToPurges struct{ jetstream.KeyValue }

func (b blindToPurges) WatchAll(ctx context.Context, opts ...jetstream.WatchOpt) (jetstream.KeyWatcher, error) {
	w, err := b.KeyValue.WatchAll(ctx, opts...)
	if err != nil {
		return nil, err
	}
	f := &purgeFilter{w: w, out: make(chan jetstream.KeyValueEntry), done: make(chan struct{})}
	go f.forward()
	return f, nil
}

type purgeFilter struct {
	w    jetstream.KeyWatcher
	out  chan jetstream.KeyValueEntry
	done chan struct{}
}

func (f *purgeFilter) forward() {
	defer close(f.out)
	for e := range f.w.Updates() {
		if e != nil && e.Operation() != jetstream.KeyValuePut {
			continue
		}
		select {
		case f.out <- e:
		case <-f.done:
			return
		}
	}
}

func (f *purgeFilter) Updates() <-chan jetstream.KeyValueEntry { return f.out }

func (f *purgeFilter) Stop() error {
	close(f.done)
	return f.w.Stop()
}

// A dispatcher whose watch never sees a webhook's purge marker still
// stops the webhook's runner once the webhook is removed: it finds
// neither the consumer nor the entry.
func TestRunnerStopsWithoutTheMarker(t *testing.T) {
	core := testenv.StartCore(t, testenv.CoreOptions{})
	ctx := t.Context()
	r, err := OpenRegistry(ctx, core.JS, core.Store, RegistryOptions{Memory: true})
	if err != nil {
		t.Fatal(err)
	}
	h, err := r.Add(ctx, Spec{URL: "https://hooks.example.com/x"})
	if err != nil {
		t.Fatal(err)
	}
	blind := *r
	blind.kv = blindToPurges{r.kv}
	d, err := New(Config{Store: core.Store, Registry: &blind, MinBackoff: 5 * time.Millisecond, MaxBackoff: 50 * time.Millisecond,
		Logger: testenv.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Open(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close() })
	runners := func() int {
		d.mu.Lock()
		defer d.mu.Unlock()
		return len(d.runners)
	}
	testenv.Eventually(t, 30*time.Second, "the webhook's runner", func() bool { return runners() == 1 })
	if err := r.Remove(ctx, h.ID); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, "the removed webhook's runner to stop", func() bool { return runners() == 0 })
}
