package engine_test

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/turnstile-dev/turnstile/engine"
	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/internal/testenv"
)

// retries is a slog.Handler that remembers which commands the engine
// logged as retrying ("not recorded yet"), and passes every record on.
// It also remembers the workspaces whose command was handed back to the
// next owner of its partition.
type retries struct {
	slog.Handler
	mu         *sync.Mutex
	seen       map[string]bool
	handedBack map[string]bool
}

func newRetries(next slog.Handler) *retries {
	return &retries{Handler: next, mu: &sync.Mutex{}, seen: map[string]bool{}, handedBack: map[string]bool{}}
}

func (h *retries) Handle(ctx context.Context, r slog.Record) error {
	key, into := "", h.seen
	switch r.Message {
	case "engine: command not recorded yet; retrying":
		key = "command"
	case "engine: a command of a partition let go is handed back to its next owner":
		key, into = "workspace", h.handedBack
	}
	if key != "" {
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == key {
				h.mu.Lock()
				into[a.Value.String()] = true
				h.mu.Unlock()
			}
			return true
		})
	}
	return h.Handler.Handle(ctx, r)
}

func (h *retries) WithAttrs(as []slog.Attr) slog.Handler {
	return &retries{Handler: h.Handler.WithAttrs(as), mu: h.mu, seen: h.seen, handedBack: h.handedBack}
}

func (h *retries) WithGroup(name string) slog.Handler {
	return &retries{Handler: h.Handler.WithGroup(name), mu: h.mu, seen: h.seen, handedBack: h.handedBack}
}

func (h *retries) wasHandedBack(ws string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.handedBack[ws]
}

func (h *retries) all(ids []string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, id := range ids {
		if !h.seen[id] {
			return false
		}
	}
	return true
}

// A command in hand that never gets recorded does not stop its engine's
// balance loop: letting go of its partition waits for it only so long, then
// stops it here and hands it back (it must not go on beside the next
// owner), so when the engine that took the partition leaves, the first one
// takes every partition back, and commands of every partition are decided
// again.
func TestStuckCommandDoesNotStopTheBalance(t *testing.T) {
	log := newRetries(testenv.Logger(t).Handler())
	cfg := engine.Config{MemberTTL: time.Second, PinnedTTL: 2 * time.Second, AckWait: 3 * time.Second, Logger: slog.New(log)}
	core := testenv.StartCore(t, testenv.CoreOptions{Engine: cfg})
	first := core.Engines[0]
	names := events.NewNames("")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	parts := events.DefaultPartitions
	testenv.Eventually(t, 20*time.Second, "the engine pulling every partition", func() bool { return len(first.Partitions()) == parts })

	// One workspace per partition, each with a command that can never be
	// recorded: its id is already in the event stream's duplicate window,
	// on another workspace's subject, so its event is refused as stored
	// and never found among its workspace's events (handle.go waits for
	// it, in progress, rather than decide it again).
	wsOf := make([]string, parts)
	for i, n := 0, 0; n < parts; i++ {
		ws := fmt.Sprintf("stuck-%d", i)
		if k := events.Partition(ws, parts); wsOf[k] == "" {
			wsOf[k], n = ws, n+1
		}
	}
	var ids []string
	for _, ws := range wsOf {
		id := ws + "-create"
		ids = append(ids, id)
		stray := nats.NewMsg(names.Event("elsewhere"))
		stray.Data = []byte(`{}`)
		stray.Header.Set(jetstream.MsgIDHeader, id)
		if _, err := core.JS.PublishMsg(ctx, stray); err != nil {
			t.Fatal(err)
		}
		b, err := events.EncodeCommand(fsm.Command{ID: id, Type: fsm.Create, Workspace: ws})
		if err != nil {
			t.Fatal(err)
		}
		m := nats.NewMsg(names.Command(ws))
		m.Data = b
		m.Header.Set(jetstream.MsgIDHeader, id)
		if _, err := core.JS.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	testenv.Eventually(t, 30*time.Second, "every stuck command in hand", func() bool { return log.all(ids) })

	second := core.StartEngine(t)
	testenv.Eventually(t, 30*time.Second, "the second engine taking its share", func() bool {
		return len(second.Partitions()) > 0 && len(first.Partitions())+len(second.Partitions()) == parts
	})
	// The commands of the partitions the second took stop on the first.
	moved := second.Partitions()
	testenv.Eventually(t, 30*time.Second, "the first engine handing back the commands of the partitions it let go", func() bool {
		for _, k := range moved {
			if !log.wasHandedBack(wsOf[k]) {
				return false
			}
		}
		return true
	})
	if err := second.Close(); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, "the first engine taking every partition back", func() bool {
		return len(first.Partitions()) == parts
	})
	cl := core.Client(t, "t")
	for k, ws := range wsOf {
		fresh := ws + "-fresh"
		if events.Partition(fresh, parts) != k {
			// Another workspace of partition k.
			for i := 0; ; i++ {
				if fresh = fmt.Sprintf("fresh-%d", i); events.Partition(fresh, parts) == k {
					break
				}
			}
		}
		if o := send(t, cl, fsm.Command{Type: fsm.Create, Workspace: fresh}); o.Outcome != fsm.Accepted {
			t.Fatalf("partition %d: create %s: %+v", k, fresh, o)
		}
	}
}
