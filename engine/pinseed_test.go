package engine_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/turnstile-dev/turnstile/engine"
	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/internal/jspull"
	"github.com/turnstile-dev/turnstile/internal/testenv"
)

// unpinRefused is a JetStream whose streams refuse to unpin a consumer
// while refuse is set: the engine's unpin fails as it does when NATS does
// not answer, and everything else is the server's.
type unpinRefused struct {
	jetstream.JetStream
	refuse *atomic.Bool
}

func (j unpinRefused) Stream(ctx context.Context, name string) (jetstream.Stream, error) {
	st, err := j.JetStream.Stream(ctx, name)
	if err != nil {
		return nil, err
	}
	return refusingStream{Stream: st, refuse: j.refuse}, nil
}

type refusingStream struct {
	jetstream.Stream
	refuse *atomic.Bool
}

func (s refusingStream) UnpinConsumer(ctx context.Context, consumer, group string) error {
	if s.refuse.Load() {
		return errors.New("unpin refused by the test")
	}
	return s.Stream.UnpinConsumer(ctx, consumer, group)
}

// startEngineOn opens an engine as core.StartEngine does, with its
// JetStream wrapped by wrap.
func startEngineOn(t *testing.T, core *testenv.Core, cfg engine.Config, wrap func(jetstream.JetStream) jetstream.JetStream) *engine.Engine {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	open := func() (*events.Store, jetstream.JetStream) {
		_, js := core.ConnectOwn(t)
		store, err := events.OpenStore(ctx, js, events.NewNames(""), events.Codec{})
		if err != nil {
			t.Fatal(err)
		}
		return store, js
	}
	store, js := open()
	cfg.Store, cfg.JetStream, cfg.ActorKey = store, wrap(js), core.ActorKey
	cfg.Committers = engine.DefaultCommitters
	for range cfg.Committers {
		cs, _ := open()
		cfg.CommitStores = append(cfg.CommitStores, cs)
	}
	e, err := engine.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Open(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })
	return e
}

// An engine that lets go of a partition and cannot unpin it leaves the
// consumer pinned to its pull for PinnedTTL. Taking the partition again
// within that time, its new pull starts with the pin it held and decides
// the partition's next command at once.
//
// On the old code the new pull started with no pin, and the server held
// it back until the pin lapsed: a minute here.
func TestRetakeAfterAFailedUnpinKeepsThePin(t *testing.T) {
	refuse := &atomic.Bool{}
	core, e, log, pulls := pinRig(t, func(js jetstream.JetStream) jetstream.JetStream { return unpinRefused{JetStream: js, refuse: refuse} })
	names := events.NewNames("")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cl := core.Client(t, "t")
	if o := send(t, cl, fsm.Command{Type: fsm.Create, Workspace: "pin-a"}); o.Outcome != fsm.Accepted {
		t.Fatalf("create pin-a: %+v", o)
	}
	pinned := func() string {
		for _, g := range consumerInfo(t, core.JS, "pin-a").PriorityGroups {
			if g.Group == engine.PriorityGroup {
				return g.PinnedClientID
			}
		}
		return ""
	}
	pin := pinned()
	if pin == "" || e.PinForTest(0, names.CommandStream()) != pin {
		t.Fatalf("the consumer is pinned to %q, the engine's pull holds %q", pin, e.PinForTest(0, names.CommandStream()))
	}

	// Another member, to whom the one partition is assigned: the engine
	// lets go of it, and its unpin is refused.
	ms, err := engine.ReadMembers(ctx, core.JS, names, events.DefaultEngineDurable)
	if err != nil || len(ms) != 1 {
		t.Fatalf("members %+v: %v", ms, err)
	}
	other := ""
	for i := 0; other == ""; i++ {
		if id := fmt.Sprintf("other-%d", i); engine.Assign(1, []string{ms[0].ID, id})[0] == id {
			other = id
		}
	}
	bucket := engine.MembersBucket(names, events.DefaultEngineDurable)
	kv, err := core.JS.KeyValue(ctx, bucket)
	if err != nil {
		t.Fatal(err)
	}
	entry, err := json.Marshal(engine.Member{ID: other, Name: other, Since: time.Now().UTC(), P: 1})
	if err != nil {
		t.Fatal(err)
	}
	st, err := core.JS.Stream(ctx, "KV_"+bucket)
	if err != nil {
		t.Fatal(err)
	}
	refused := func() int {
		n := 0
		for _, r := range log.find("engine: could not unpin; the next owner waits for the pinned TTL") {
			if r.attrs["stream"].String() == names.CommandStream() {
				n++
			}
		}
		return n
	}
	// away has the engine let go of the partition (its unpin refused or
	// not) and take it again.
	away := func(what string, refusals int) {
		t.Helper()
		testenv.Eventually(t, 30*time.Second, "the engine letting go of the partition, "+what, func() bool {
			// Announced again at each look: it lives for the member TTL.
			if _, err := kv.Put(ctx, other, entry); err != nil {
				t.Fatal(err)
			}
			return len(e.Partitions()) == 0 && refused() == refusals
		})
		if err := st.Purge(ctx, jetstream.WithPurgeSubject("$KV."+bucket+"."+other)); err != nil {
			t.Fatal(err)
		}
		testenv.Eventually(t, 20*time.Second, "the engine taking the partition again", func() bool {
			return slices.Equal(e.Partitions(), []int{0})
		})
	}
	refuse.Store(true)
	away("its unpin refused", 1)
	if got := pinned(); got != pin {
		t.Fatalf("after the refused unpin the consumer is pinned to %q, want the engine's %q", got, pin)
	}
	// Well under the PinnedTTL the old code waited out.
	sctx, scancel := context.WithTimeout(ctx, 10*time.Second)
	defer scancel()
	o, err := cl.Send(sctx, fsm.Command{Type: fsm.Create, Workspace: "pin-b"})
	if err != nil {
		t.Fatalf("create pin-b after the partition was taken again: %v", err)
	}
	if o.Outcome != fsm.Accepted {
		t.Fatalf("create pin-b: %+v", o)
	}
	if got := pinned(); got != pin || e.PinForTest(0, names.CommandStream()) != pin {
		t.Fatalf("after the take the consumer is pinned to %q and the pull holds %q, want the first pin %q",
			got, e.PinForTest(0, names.CommandStream()), pin)
	}
	testenv.Eventually(t, 10*time.Second, "the pull after the take seen", func() bool { return len(pulls.take(t)) == 2 })
	if first := pulls.take(t)[1]; first != pin {
		t.Fatalf("the pull after the refused unpin began with pin %q, want %q", first, pin)
	}

	// Let go again, refused again: the pull after it starts with the pin
	// too, and has no delivery under it.
	away("its unpin refused again", 2)
	if got := pinned(); got != pin {
		t.Fatalf("after the second refused unpin the consumer is pinned to %q, want %q", got, pin)
	}
	testenv.Eventually(t, 10*time.Second, "the pull after the second take seen", func() bool { return len(pulls.take(t)) == 3 })
	if first := pulls.take(t)[2]; first != pin {
		t.Fatalf("the pull after the second refused unpin began with pin %q, want %q", first, pin)
	}

	// Let go once more, unpin allowed: the pull held the pin it started
	// with, no delivery since, and unpins it (the server's pin is not
	// another engine's). The pin is forgotten: the next pull starts with
	// none.
	refuse.Store(false)
	away("unpinned", 2)
	if n := refused(); n != 2 {
		t.Fatalf("the last unpin was refused too (%d refusals)", n)
	}
	if got := pinned(); got != "" {
		t.Fatalf("after the unpin and a take with no command since, the consumer is pinned to %q", got)
	}
	testenv.Eventually(t, 10*time.Second, "the pull after the last take seen", func() bool { return len(pulls.take(t)) == 4 })
	if first := pulls.take(t)[3]; first != "" {
		t.Fatalf("the pull after the unpin began with pin %q", first)
	}
	if o := send(t, cl, fsm.Command{Type: fsm.Create, Workspace: "pin-c"}); o.Outcome != fsm.Accepted {
		t.Fatalf("create pin-c: %+v", o)
	}
}

// pinRig starts a core of one partition (PinnedTTL a minute) whose engine
// is the test's, on the JetStream wrap makes of its own: the core's engine
// goes (closing, it unpins and leaves), and the test's starts once its
// pulls are watched, so each pull's first request is seen. It returns when
// that engine pulls the partition.
func pinRig(t *testing.T, wrap func(jetstream.JetStream) jetstream.JetStream) (*testenv.Core, *engine.Engine, *logged, *pullFirsts) {
	t.Helper()
	log := newLogged(testenv.Logger(t).Handler())
	cfg := engine.Config{MemberTTL: time.Second, PinnedTTL: time.Minute, Logger: slog.New(log)}
	core := testenv.StartCore(t, testenv.CoreOptions{Partitions: 1, Engine: cfg})
	if err := core.Engines[0].Close(); err != nil {
		t.Fatal(err)
	}
	names := events.NewNames("")
	pulls := watchPulls(t, core.NC, jspull.NextSubject(core.JS, names.CommandStream(), events.EngineConsumer(events.DefaultEngineDurable, 0)))
	e := startEngineOn(t, core, cfg, wrap)
	testenv.Eventually(t, 20*time.Second, "the engine pulling the partition", func() bool { return slices.Equal(e.Partitions(), []int{0}) })
	return core, e, log, pulls
}

// pullFirsts records, for each pull (its reply inbox) asking on subject,
// the pin id its first request came with, in the order the pulls began.
type pullFirsts struct {
	reqs   chan *nats.Msg
	seen   map[string]bool
	firsts []string
}

func watchPulls(t *testing.T, nc *nats.Conn, subject string) *pullFirsts {
	t.Helper()
	w := &pullFirsts{reqs: make(chan *nats.Msg, 10000), seen: map[string]bool{}}
	sub, err := nc.ChanSubscribe(subject, w.reqs)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return w
}

// take reads the requests copied so far and returns the first pins.
func (w *pullFirsts) take(t *testing.T) []string {
	t.Helper()
	for {
		select {
		case m := <-w.reqs:
			if w.seen[m.Reply] {
				continue
			}
			w.seen[m.Reply] = true
			var r struct {
				PinID string `json:"id"`
			}
			if err := json.Unmarshal(m.Data, &r); err != nil {
				t.Fatal(err)
			}
			w.firsts = append(w.firsts, r.PinID)
		default:
			return w.firsts
		}
	}
}

// A partition taken afresh (its pull ended by itself: here its consumer
// was deleted, and made again by the take) starts with no pin, though its
// letGo could not unpin the deleted consumer: the new consumer never held
// the old pin.
//
// Without the forget the new pull's first request carried the old pin
// (answered 423 at the next command, one round trip lost: so this test,
// not a timing, shows it).
func TestRetakeAfreshForgetsThePin(t *testing.T) {
	core, e, log, pulls := pinRig(t, func(js jetstream.JetStream) jetstream.JetStream { return js })
	names := events.NewNames("")
	durable := events.EngineConsumer(events.DefaultEngineDurable, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cl := core.Client(t, "t")
	if o := send(t, cl, fsm.Command{Type: fsm.Create, Workspace: "fresh-a"}); o.Outcome != fsm.Accepted {
		t.Fatalf("create fresh-a: %+v", o)
	}
	pin := e.PinForTest(0, names.CommandStream())
	if pin == "" {
		t.Fatal("no pin after a command was decided")
	}
	before := len(pulls.take(t))
	if err := core.JS.DeleteConsumer(ctx, names.CommandStream(), durable); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, "the partition taken afresh and pulled again", func() bool {
		return len(log.find("engine: partition let go after its pull ended; the next look takes it again")) > 0 &&
			slices.Equal(e.Partitions(), []int{0}) && len(pulls.take(t)) > before
	})
	if refused := log.find("engine: could not unpin; the next owner waits for the pinned TTL"); len(refused) == 0 {
		t.Fatal("the letGo of the deleted consumer unpinned it: the test needs a failed unpin")
	}
	for i, first := range pulls.take(t)[before:] {
		if first != "" {
			t.Fatalf("pull %d after the retake began with pin %q (the deleted consumer's was %q)", i+1, first, pin)
		}
	}
	if o := send(t, cl, fsm.Command{Type: fsm.Create, Workspace: "fresh-b"}); o.Outcome != fsm.Accepted {
		t.Fatalf("create fresh-b: %+v", o)
	}
}
