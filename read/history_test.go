package read_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/internal/testenv"
	"github.com/turnstile-dev/turnstile/read"
)

// histories is an event store on a fresh embedded NATS, the connection
// it reads through (whose counts say how much a read fetched) and the
// workspaces written so far.
type histories struct {
	nc     *nats.Conn
	js     jetstream.JetStream
	store  *events.Store
	states map[string]fsm.Workspace
	acks   []jetstream.PubAckFuture
}

func newHistories(tb testing.TB) *histories {
	tb.Helper()
	n := testenv.StartNATS(tb, testenv.NATSOptions{})
	nc, js := n.Connect(tb)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	names := events.NewNames("")
	if err := events.EnsureStreams(ctx, js, names, events.StreamOptions{Memory: true}); err != nil {
		tb.Fatal(err)
	}
	store, err := events.OpenStore(ctx, js, names, events.Codec{})
	if err != nil {
		tb.Fatal(err)
	}
	return &histories{nc: nc, js: js, store: store, states: map[string]fsm.Workspace{}}
}

// add writes n events of workspace id, each decided from its state as the
// engine would, round a cycle of provision, stop and start, so that From
// changes from one event to the next. It does not wait for the acks
// (settle does): the benchmark writes 100,000.
func (h *histories) add(tb testing.TB, id string, n int) {
	tb.Helper()
	for range n {
		w := h.states[id]
		cmd := fsm.Command{ID: fmt.Sprintf("c-%s-%d", id, w.Seq+1), Workspace: id, Actor: "test"}
		switch w.Status {
		case fsm.None:
			cmd.Type = fsm.Create
		case fsm.Provisioning:
			cmd.Type, cmd.Generation, cmd.ContainerID = fsm.ProvisionSucceeded, w.Generation, "c1"
		case fsm.Running:
			cmd.Type = fsm.Stop
		case fsm.Stopping:
			cmd.Type, cmd.Generation = fsm.StopSucceeded, w.Generation
		default:
			cmd.Type = fsm.Start
		}
		d := fsm.Decide(w, cmd)
		if d.Outcome != fsm.Accepted {
			tb.Fatalf("%s on %s: %s %s", cmd.Type, w.Status, d.Outcome, d.Reason)
		}
		env := events.NewEnvelope(cmd.ID+"-e", w, *d.Event, cmd, time.Now())
		data, err := h.store.Codec().Encode(env)
		if err != nil {
			tb.Fatal(err)
		}
		h.states[id] = env.State
		h.publish(tb, id, data)
	}
}

// garbage writes n messages no reader can use on workspace id's subject.
func (h *histories) garbage(tb testing.TB, id string, n int) {
	tb.Helper()
	for range n {
		h.publish(tb, id, []byte(`{"garbage":true}`))
	}
}

func (h *histories) publish(tb testing.TB, id string, data []byte) {
	tb.Helper()
	if len(h.acks) == 1000 {
		h.settle(tb)
	}
	f, err := h.js.PublishAsync(h.store.Names().Event(id), data)
	if err != nil {
		tb.Fatal(err)
	}
	h.acks = append(h.acks, f)
}

// settle waits for every write's ack.
func (h *histories) settle(tb testing.TB) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	testenv.AwaitAcks(tb, ctx, h.acks)
	h.acks = h.acks[:0]
}

// pages reads workspace id's history after after in pages of limit, as
// apiclient.History does, and returns the events and the pages read.
func pages(t *testing.T, store *events.Store, id string, after uint64, limit int) ([]read.Event, int) {
	t.Helper()
	var all []read.Event
	for n := 1; ; n++ {
		page, more, err := read.HistoryPage(context.Background(), store, id, after, limit)
		if err != nil {
			t.Fatalf("page %d after %d: %v", n, after, err)
		}
		all = append(all, page...)
		if !more {
			return all, n
		}
		if len(page) != limit {
			t.Fatalf("page %d after %d: %d events and more, want %d", n, after, len(page), limit)
		}
		after = page[len(page)-1].Seq
	}
}

// after is the part of history after event seq after: what a page after
// it starts with.
func after(history []read.Event, after uint64) []read.Event {
	for i, e := range history {
		if e.Seq > after {
			return history[i:]
		}
	}
	return []read.Event{}
}

// TestHistoryPage pages through a history of 2,600 events interleaved in
// the stream with another workspace's: the pages hold exactly the whole
// history's events, From included (the state of the event before each
// page, which the page's read no longer passes through).
func TestHistoryPage(t *testing.T) {
	h := newHistories(t)
	const n = 2600
	for range n / 2 {
		h.add(t, "long", 2)
		h.add(t, "other", 1)
	}
	h.settle(t)
	ctx := context.Background()
	whole, err := read.History(ctx, h.store, "long")
	if err != nil || len(whole) != n {
		t.Fatalf("whole history: %d events, %v", len(whole), err)
	}

	for _, limit := range []int{1000, 97} {
		t.Run(fmt.Sprintf("Limit%d", limit), func(t *testing.T) {
			got, np := pages(t, h.store, "long", 0, limit)
			if !reflect.DeepEqual(got, whole) {
				t.Fatalf("pages of %d: %d events differ from the whole history's %d", limit, len(got), len(whole))
			}
			if want := (n + limit - 1) / limit; np != want {
				t.Fatalf("%d pages of %d, want %d", np, limit, want)
			}
		})
	}

	t.Run("FromAnyCursor", func(t *testing.T) {
		for _, a := range []uint64{1, 2, 3, 511, 512, 513, 1299, 1300, 2001, n - 2, n - 1} {
			page, more, err := read.HistoryPage(ctx, h.store, "long", a, 2)
			want := whole[a : a+min(2, n-a)]
			if err != nil || !reflect.DeepEqual(page, want) || more != (a+2 < n) {
				t.Fatalf("after %d: %+v, more %v, %v; want %+v, more %v", a, page, more, err, want, a+2 < n)
			}
		}
	})

	t.Run("BeyondTheEnd", func(t *testing.T) {
		for _, a := range []uint64{n, n + 1, 1 << 40} {
			page, more, err := read.HistoryPage(ctx, h.store, "long", a, 100)
			if err != nil || len(page) != 0 || page == nil || more {
				t.Fatalf("after %d: %d events, more %v, %v; want an empty page", a, len(page), more, err)
			}
		}
	})

	t.Run("ErrNoWorkspace", func(t *testing.T) {
		for _, a := range []uint64{0, 5} {
			if _, _, err := read.HistoryPage(ctx, h.store, "never", a, 100); !errors.Is(err, read.ErrNoWorkspace) {
				t.Fatalf("after %d: %v, want ErrNoWorkspace", a, err)
			}
		}
	})
}

// TestHistoryPageReadsNearTheCursor counts the messages a late page of a
// long history fetches: about the page (plus a binary search's few direct
// gets), not the events before it. Before HistoryAfter, each page read the
// history from its first event: this page fetched all 3,000.
func TestHistoryPageReadsNearTheCursor(t *testing.T) {
	h := newHistories(t)
	const n = 3000
	for range n {
		h.add(t, "long", 1)
		h.add(t, "other", 1)
	}
	h.settle(t)
	ctx := context.Background()
	before := h.nc.Stats().InMsgs
	page, more, err := read.HistoryPage(ctx, h.store, "long", n-100, 100)
	fetched := h.nc.Stats().InMsgs - before
	if err != nil || len(page) != 100 || more || page[0].Seq != n-99 {
		t.Fatalf("the last page: %d events from %d, more %v, %v", len(page), page[0].Seq, more, err)
	}
	// The newest message, a binary search over 6,000 stream sequences (13
	// direct gets), and one batch get of 101 events and its end: about
	// 116. Read from event 1, the page fetched 6,000 and more; with
	// jetstreamext's batch get, whose inbox lies under the connection's
	// response wildcard, every message of the batch came twice (218).
	if fetched > 150 {
		t.Fatalf("a page of 100 events fetched %d messages", fetched)
	}
	t.Logf("a page of 100 after event %d fetched %d messages", n-100, fetched)
}

// TestHistoryPageAsksForThePage counts the messages a small page of a long
// history fetches, at its start and in its middle: about the page (plus
// the search's direct gets), not a whole batch of the history after it.
// Before, each batch get asked for 512 events whatever the page's limit: a
// page of 10 after event 1000 had fetched 346 messages by the time it
// returned (and the rest of its batch came after).
func TestHistoryPageAsksForThePage(t *testing.T) {
	h := newHistories(t)
	const n = 3000
	for range n {
		h.add(t, "long", 1)
		h.add(t, "other", 1)
	}
	h.settle(t)
	ctx := context.Background()
	for _, after := range []uint64{0, 1000} {
		before := h.nc.Stats().InMsgs
		page, more, err := read.HistoryPage(ctx, h.store, "long", after, 10)
		fetched := h.nc.Stats().InMsgs - before
		if err != nil || len(page) != 10 || !more || page[0].Seq != after+1 {
			t.Fatalf("a page of 10 after event %d: %d events, more %v, %v", after, len(page), more, err)
		}
		// The newest message, a binary search over 6,000 stream sequences
		// (13 direct gets), and one batch get of the event at the cursor,
		// the 10 of the page and the one that shows more follow, and its
		// end: about 28.
		if fetched > 40 {
			t.Errorf("a page of 10 after event %d fetched %d messages", after, fetched)
		}
		t.Logf("a page of 10 after event %d fetched %d messages", after, fetched)
	}
}

// TestHistoryPageUnreadable puts messages no reader can use on the
// workspace's subject: before its first event, alone in the middle, a run
// longer than the search steps over, and as the newest. Every page, from
// every cursor, is the whole history's (which skips them) from there.
func TestHistoryPageUnreadable(t *testing.T) {
	h := newHistories(t)
	h.garbage(t, "long", 1)
	for i := range 300 {
		switch i {
		case 100:
			h.garbage(t, "long", 1)
		case 150:
			h.garbage(t, "long", 2)
		case 200:
			h.garbage(t, "long", 40) // more than seek steps over
		}
		h.add(t, "long", 1)
		h.add(t, "other", 1)
	}
	h.garbage(t, "long", 1)
	h.settle(t)
	ctx := context.Background()
	whole, err := read.History(ctx, h.store, "long")
	if err != nil || len(whole) != 300 {
		t.Fatalf("whole history: %d events, %v", len(whole), err)
	}
	for a := uint64(0); a <= 302; a++ {
		page, more, err := read.HistoryPage(ctx, h.store, "long", a, 3)
		rest := after(whole, a)
		want := rest[:min(3, len(rest))]
		if err != nil || !reflect.DeepEqual(page, want) || more != (len(rest) > 3) {
			t.Fatalf("after %d: %+v, more %v, %v; want %+v, more %v", a, page, more, err, want, len(rest) > 3)
		}
	}
	if got, _ := pages(t, h.store, "long", 0, 7); !reflect.DeepEqual(got, whole) {
		t.Fatalf("pages of 7: %d events differ from the whole history's %d", len(got), len(whole))
	}
}

// BenchmarkHistoryPage reads one page of 1,000 events (apiclient.History's
// page) of a workspace with a history of 100,000: the first page and the
// last. msgs/op is how many messages the page fetched.
func BenchmarkHistoryPage(b *testing.B) {
	h := newHistories(b)
	const n = 100_000
	h.add(b, "long", n)
	h.settle(b)
	ctx := context.Background()
	for _, bc := range []struct {
		name  string
		after uint64
	}{{"First", 0}, {"Last", n - 1000}} {
		b.Run(bc.name, func(b *testing.B) {
			before := h.nc.Stats().InMsgs
			for b.Loop() {
				page, _, err := read.HistoryPage(ctx, h.store, "long", bc.after, 1000)
				if err != nil || len(page) != 1000 {
					b.Fatalf("%d events, %v", len(page), err)
				}
			}
			b.ReportMetric(float64(h.nc.Stats().InMsgs-before)/float64(b.N), "msgs/op")
		})
	}
}
