package webhook

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/internal/testenv"
)

// leaveAfterCreate is an Add's caller hanging up just after the server
// made its consumer or stored its entry, before the answer came back:
// the step took effect and Add sees the context's error.
type leaveAfterCreate struct {
	jetstream.KeyValue
	cancel context.CancelFunc
}

func (l leaveAfterCreate) Create(ctx context.Context, key string, value []byte, opts ...jetstream.KVCreateOpt) (uint64, error) {
	if _, err := l.KeyValue.Create(ctx, key, value, opts...); err != nil {
		return 0, err
	}
	l.cancel()
	return 0, context.Canceled
}

type leaveAfterConsumer struct {
	jetstream.JetStream
	cancel context.CancelFunc
}

func (l leaveAfterConsumer) CreateConsumer(ctx context.Context, stream string, cfg jetstream.ConsumerConfig) (jetstream.Consumer, error) {
	if _, err := l.JetStream.CreateConsumer(ctx, stream, cfg); err != nil {
		return nil, err
	}
	l.cancel()
	return nil, context.Canceled
}

// An Add that fails after the server made its consumer, or stored its
// entry, takes back what was made although its caller has gone: a
// consumer without its entry could never be removed (Remove starts from
// the entry), and an entry whose secret no one saw would count toward
// MaxWebhooks, its delivery never binding.
func TestAddTakesBackWhenTheCallerLeaves(t *testing.T) {
	n := events.NewNames("")
	for _, step := range []string{"consumer", "entry"} {
		t.Run(step, func(t *testing.T) {
			core := testenv.StartCore(t, testenv.CoreOptions{})
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			js := core.JS
			if step == "consumer" {
				js = leaveAfterConsumer{JetStream: core.JS, cancel: cancel}
			}
			store, err := events.OpenStore(t.Context(), js, n, events.Codec{})
			if err != nil {
				t.Fatal(err)
			}
			r, err := OpenRegistry(t.Context(), core.JS, store, RegistryOptions{Memory: true})
			if err != nil {
				t.Fatal(err)
			}
			if step == "entry" {
				r.kv = leaveAfterCreate{KeyValue: r.kv, cancel: cancel}
			}
			if _, err := r.Add(ctx, Spec{URL: "https://hooks.example.com/" + step}); !errors.Is(err, ErrUnavailable) {
				t.Fatalf("add: %v, want ErrUnavailable", err)
			}

			st, err := core.JS.Stream(t.Context(), n.EventStream())
			if err != nil {
				t.Fatal(err)
			}
			names := st.ConsumerNames(t.Context())
			for name := range names.Name() {
				if strings.HasPrefix(name, "webhook-") {
					t.Errorf("the failed add left consumer %s", name)
				}
			}
			if err := names.Err(); err != nil {
				t.Fatal(err)
			}
			revs, err := r.revisions(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			if len(revs) != 0 {
				t.Errorf("the failed add left entries %v", revs)
			}
		})
	}
}
