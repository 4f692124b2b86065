package engine_test

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
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

// logged is a slog.Handler that keeps every record at any level (with its
// attributes) and passes on to next those next takes.
type logged struct {
	next  slog.Handler
	attrs []slog.Attr
	mu    *sync.Mutex
	recs  *[]loggedRecord
}

type loggedRecord struct {
	msg   string
	attrs map[string]slog.Value
}

func newLogged(next slog.Handler) *logged {
	return &logged{next: next, mu: &sync.Mutex{}, recs: &[]loggedRecord{}}
}

func (h *logged) Enabled(context.Context, slog.Level) bool { return true }

func (h *logged) Handle(ctx context.Context, r slog.Record) error {
	rec := loggedRecord{msg: r.Message, attrs: map[string]slog.Value{}}
	for _, a := range h.attrs {
		rec.attrs[a.Key] = a.Value
	}
	r.Attrs(func(a slog.Attr) bool {
		rec.attrs[a.Key] = a.Value
		return true
	})
	h.mu.Lock()
	*h.recs = append(*h.recs, rec)
	h.mu.Unlock()
	if h.next.Enabled(ctx, r.Level) {
		return h.next.Handle(ctx, r)
	}
	return nil
}

func (h *logged) WithAttrs(as []slog.Attr) slog.Handler {
	return &logged{next: h.next.WithAttrs(as), attrs: append(slices.Clone(h.attrs), as...), mu: h.mu, recs: h.recs}
}

func (h *logged) WithGroup(name string) slog.Handler {
	return &logged{next: h.next.WithGroup(name), attrs: h.attrs, mu: h.mu, recs: h.recs}
}

// find returns the records with message msg, oldest first.
func (h *logged) find(msg string) []loggedRecord {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []loggedRecord
	for _, r := range *h.recs {
		if r.msg == msg {
			out = append(out, r)
		}
	}
	return out
}

// stuckCommand publishes a create of ws that can never be recorded (its id
// is already in the event stream's duplicate window, on another subject:
// handle waits for its event, in progress, rather than decide it again),
// and returns its id. It keeps its consumer's ack floor where it is.
func stuckCommand(t *testing.T, ctx context.Context, js jetstream.JetStream, ws string) string {
	t.Helper()
	names := events.NewNames("")
	id := ws + "-create"
	stray := nats.NewMsg(names.Event("elsewhere"))
	stray.Data = []byte(`{}`)
	stray.Header.Set(jetstream.MsgIDHeader, id)
	if _, err := js.PublishMsg(ctx, stray); err != nil {
		t.Fatal(err)
	}
	publishCommand(t, ctx, js, fsm.Command{ID: id, Type: fsm.Create, Workspace: ws})
	return id
}

func publishCommand(t *testing.T, ctx context.Context, js jetstream.JetStream, cmd fsm.Command) {
	t.Helper()
	if _, err := js.PublishMsg(ctx, commandMsg(t, cmd)); err != nil {
		t.Fatal(err)
	}
}

// commandMsg is cmd as a client publishes it, on the default prefix.
func commandMsg(t *testing.T, cmd fsm.Command) *nats.Msg {
	t.Helper()
	b, err := events.EncodeCommand(cmd)
	if err != nil {
		t.Fatal(err)
	}
	m := nats.NewMsg(events.NewNames("").Command(cmd.Workspace))
	m.Data = b
	m.Header.Set(jetstream.MsgIDHeader, cmd.ID)
	return m
}

// consumerInfo is the current info of the engine consumer of ws's
// partition on the command stream.
func consumerInfo(t *testing.T, js jetstream.JetStream, ws string) *jetstream.ConsumerInfo {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	info, err := partConsumer(t, js, ws).Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info
}

// A partition whose ack floor lags far behind (one command held up while
// thousands after it were acked) is taken over all the same, though reading
// its range takes many times readAttempt: readAttempt bounds each request
// of the read, not the read. The read queues only the commands not
// finished, and the new owner decides new commands of the partition.
//
// On the old code, which bounded the whole read by readAttempt, every
// command whose outcome it had not looked up when the time was out counted
// as unfinished, and was queued again.
func TestTakeoverOfALongRange(t *testing.T) {
	const acked = 3000
	log := newLogged(testenv.Logger(t).Handler())
	cfg := engine.Config{MemberTTL: time.Second, AckWait: 5 * time.Second, Logger: slog.New(log)}
	// Far less than the read of the whole range takes, far more than one
	// request does.
	cfg = engine.WithReadAttempt(cfg, 200*time.Millisecond)
	core := testenv.StartCore(t, testenv.CoreOptions{Engine: cfg, Partitions: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	floor := heldRange(t, ctx, core, log, acked)

	second := core.StartEngine(t)
	if err := core.Engines[0].Close(); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, "the second engine taking the partition", func() bool {
		return slices.Equal(second.Partitions(), []int{0})
	})
	cl := core.Client(t, "t")
	if o := send(t, cl, fsm.Command{Type: fsm.Create, Workspace: "fresh"}); o.Outcome != fsm.Accepted {
		t.Fatalf("create fresh: %+v", o)
	}
	var read []loggedRecord
	for _, r := range log.find("engine: read the commands taken before this start") {
		if r.attrs["stream"].String() == events.NewNames("").CommandStream() && fmt.Sprint(r.attrs["from"]) == fmt.Sprint(floor+1) {
			read = append(read, r)
		}
	}
	if len(read) == 0 {
		t.Fatal("no read of the commands taken from the ack floor")
	}
	for _, r := range read {
		t.Logf("read from %v to %v: %v commands, %v unfinished, took %v", r.attrs["from"], r.attrs["to"],
			r.attrs["commands"], r.attrs["unfinished"], r.attrs["took"])
		if n := r.attrs["unfinished"].Int64(); n > 1 {
			t.Errorf("the takeover read %d commands as unfinished; only the held one is", n)
		}
	}
}

// wsIn returns a workspace name with prefix that falls in partition k of
// parts.
func wsIn(prefix string, k, parts int) string {
	for i := 0; ; i++ {
		if ws := fmt.Sprintf("%s-%d", prefix, i); events.Partition(ws, parts) == k {
			return ws
		}
	}
}

// A partition that cannot be taken (its consumer does not answer: here it
// is gone) holds up the take of no other partition, and does not stop its
// engine following the members: when another engine leaves, it takes that
// engine's partitions; when the consumer is back, it takes that one too.
//
// On the old code, rebalance waited for every take it started, so the
// engine stuck on the one partition never took the leaving engine's.
func TestAStuckTakeHoldsUpNoOtherPartition(t *testing.T) {
	// Without retakes: the first engine, pulling k when its consumer is
	// deleted, would otherwise make it again (a pull that ended by
	// itself), and the consumer is to stay away until the test puts it back.
	cfg := engine.WithoutRetake(engine.Config{MemberTTL: time.Second, PinnedTTL: 2 * time.Second})
	core := testenv.StartCore(t, testenv.CoreOptions{Engines: 3, Engine: cfg})
	parts := events.DefaultPartitions
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	owned := func(es ...*engine.Engine) []int {
		var got []int
		for _, e := range es {
			got = append(got, e.Partitions()...)
		}
		slices.Sort(got)
		return got
	}
	all := make([]int, parts)
	for k := range all {
		all[k] = k
	}
	first, b, c := core.Engines[0], core.Engines[1], core.Engines[2]
	names := events.NewNames("")
	// Settled: each pulls what the assignment of the three gives it. Not
	// only split: while the first still lets go of a partition another
	// is to pull, k could be one, taken by the other just before its
	// consumer goes (then pulled, not stuck, and the test failed).
	testenv.Eventually(t, 30*time.Second, "three engines pulling what the assignment gives each", func() bool {
		ms, err := engine.ReadMembers(ctx, core.JS, names, "turnstile-engine")
		if err != nil || len(ms) != 3 {
			return false
		}
		ids := []string{ms[0].ID, ms[1].ID, ms[2].ID}
		slices.Sort(ids)
		shares := map[string][]int{}
		for p, id := range engine.Assign(parts, ids) {
			shares[id] = append(shares[id], p)
		}
		for _, e := range []*engine.Engine{first, b, c} {
			got := slices.Sorted(slices.Values(e.Partitions()))
			if !slices.ContainsFunc(slices.Collect(maps.Values(shares)), func(share []int) bool {
				return slices.Equal(slices.Sorted(slices.Values(share)), got)
			}) {
				return false
			}
		}
		return slices.Equal(owned(first, b, c), all)
	})
	// A consumer of one of the first engine's partitions goes away.
	k := first.Partitions()[0]
	durable := events.EngineConsumer("turnstile-engine", k)
	cons, err := core.JS.Consumer(ctx, names.CommandStream(), durable)
	if err != nil {
		t.Fatal(err)
	}
	gone := cons.CachedInfo().Config
	if err := core.JS.DeleteConsumer(ctx, names.CommandStream(), durable); err != nil {
		t.Fatal(err)
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	rest := slices.DeleteFunc(slices.Clone(all), func(p int) bool { return p == k })
	var lastB, lastC []int
	defer func() {
		// It timed out once in a clean-clone CI run with two engine
		// packages' tests beside it: say where the partitions were.
		if t.Failed() {
			t.Logf("partitions last seen: engine b %v, engine c %v; wanted %v between them (k %d)", lastB, lastC, rest, k)
		}
	}()
	testenv.Eventually(t, 30*time.Second, "the two left taking every partition but the one without a consumer", func() bool {
		lastB, lastC = b.Partitions(), c.Partitions()
		return slices.Equal(owned(b, c), rest)
	})
	// The engine that is to take k (and cannot) is left alone.
	stuck, other := b, c
	testenv.Eventually(t, 30*time.Second, "the members' announcements", func() bool {
		stuck, other = b, c
		ms, err := engine.ReadMembers(ctx, core.JS, names, "turnstile-engine")
		if err != nil || len(ms) != 2 {
			return false
		}
		ids := []string{ms[0].ID, ms[1].ID}
		slices.Sort(ids)
		for _, m := range ms {
			if slices.Equal(m.Partitions, c.Partitions()) && engine.Assign(parts, ids)[k] == m.ID {
				stuck, other = c, b
			}
			if !slices.Equal(m.Partitions, b.Partitions()) && !slices.Equal(m.Partitions, c.Partitions()) {
				return false
			}
		}
		return true
	})
	if err := other.Close(); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, "the engine stuck on one partition taking every other", func() bool {
		return slices.Equal(stuck.Partitions(), rest)
	})
	cl := core.Client(t, "t")
	for _, p := range rest {
		if ws := wsIn("stuck-take", p, parts); send(t, cl, fsm.Command{Type: fsm.Create, Workspace: ws}).Outcome != fsm.Accepted {
			t.Fatalf("create %s", ws)
		}
	}
	if _, err := core.JS.CreateOrUpdateConsumer(ctx, names.CommandStream(), gone); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, "the engine taking the partition whose consumer is back", func() bool {
		return slices.Equal(stuck.Partitions(), all)
	})
	if ws := wsIn("stuck-take", k, parts); send(t, cl, fsm.Command{Type: fsm.Create, Workspace: ws}).Outcome != fsm.Accepted {
		t.Fatalf("create %s", ws)
	}
}

// An engine letting go of a partition with a command in hand waits for it
// (up to AckWait), longer than PinnedTTL: by then the next owner is pinned
// and deciding. The unpin at the end of the letGo must leave that pin
// alone.
//
// On the old code it unpinned whoever held the pin.
func TestLetGoLeavesTheNextOwnersPin(t *testing.T) {
	log := newLogged(testenv.Logger(t).Handler())
	// PinnedTTL stays the default: above pullExpiry, or an idle owner's pin
	// lapses between its pulls. AckWait leaves the next owner the time to
	// be pinned (PinnedTTL after the first engine's last pull) well before
	// the first stops waiting.
	cfg := engine.Config{MemberTTL: time.Second, AckWait: 20 * time.Second, Logger: slog.New(log)}
	core := testenv.StartCore(t, testenv.CoreOptions{Engine: cfg})
	first := core.Engines[0]
	parts := events.DefaultPartitions
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	testenv.Eventually(t, 20*time.Second, "the engine pulling every partition", func() bool { return len(first.Partitions()) == parts })
	// A command in hand in every partition, so that whichever the second
	// engine takes, the first waits in letting it go.
	var ids []string
	for k := range parts {
		ids = append(ids, stuckCommand(t, ctx, core.JS, wsIn("held", k, parts)))
	}
	testenv.Eventually(t, 30*time.Second, "every held command in hand", func() bool {
		seen := map[string]bool{}
		for _, r := range log.find("engine: command not recorded yet; retrying") {
			seen[r.attrs["command"].String()] = true
		}
		for _, id := range ids {
			if !seen[id] {
				return false
			}
		}
		return true
	})
	letGo := func(k int) bool {
		for _, r := range log.find("engine: partitions") {
			if ks, ok := r.attrs["let_go"].Any().([]int); ok && slices.Contains(ks, k) {
				return true
			}
		}
		return false
	}

	second := core.StartEngine(t)
	testenv.Eventually(t, 30*time.Second, "the second engine taking its share", func() bool {
		return len(second.Partitions()) > 0 && len(first.Partitions())+len(second.Partitions()) == parts
	})
	k := second.Partitions()[0]
	// Decided by the second engine once the first's pin has lapsed.
	cl := core.Client(t, "t")
	ws := wsIn("pinned", k, parts)
	if o := send(t, cl, fsm.Command{Type: fsm.Create, Workspace: ws}); o.Outcome != fsm.Accepted {
		t.Fatalf("create %s: %+v", ws, o)
	}
	pin := func() string {
		for _, g := range consumerInfo(t, core.JS, ws).PriorityGroups {
			if g.Group == engine.PriorityGroup {
				return g.PinnedClientID
			}
		}
		return ""
	}
	second1 := pin()
	if second1 == "" {
		t.Fatal("no pin after the second engine decided a command of its partition")
	}
	if letGo(k) {
		t.Fatal("the first engine let go before the second was pinned: the test needs a longer AckWait")
	}
	testenv.Eventually(t, 40*time.Second, "the first engine letting go", func() bool { return letGo(k) })
	if got := pin(); got != second1 {
		t.Fatalf("after the first engine let go of partition %d the pin is %q, was the second engine's %q", k, got, second1)
	}
	if o := send(t, cl, fsm.Command{Type: fsm.Delete, Workspace: ws}); o.Outcome != fsm.Accepted {
		t.Fatalf("delete %s: %+v", ws, o)
	}
}
