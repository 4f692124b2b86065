package events_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/internal/testenv"
)

// badShapes are messages no reader can use, by the reason readers give:
// garbage, invalid JSON, JSON of another schema, an envelope of another
// workspace and one too large.
func badShapes(tb testing.TB, other []byte) map[string][]byte {
	tb.Helper()
	huge := `{"garbage":"` + strings.Repeat("x", events.MaxEnvelopeBytes) + `"}`
	return map[string][]byte{
		events.ReasonMalformed + "/garbage": []byte(`{"garbage":true}`),
		events.ReasonMalformed + "/json":    []byte(`{"id": "e1", "workspace": `),
		events.ReasonFutureSchema:           []byte(`{"schema_version": 99, "type": "workspace.created"}`),
		events.ReasonMisaddressed:           other,
		events.ReasonTooLarge:               []byte(huge),
	}
}

// TestUnreadableMessagesStallNoReader puts unreadable messages on a live
// workspace's event subject, as a client allowed to publish there could:
// Load, History, Replay and Subscribe skip them and say what they are,
// and the engine still decides the workspace's next command. Issue 12
// item 5 ("stop control timed out"): on main, Load failed on them, so the
// engine retried the stop until the client gave up, and History, Replay
// and Subscribe failed.
func TestUnreadableMessagesStallNoReader(t *testing.T) {
	core := testenv.StartCore(t, testenv.CoreOptions{})
	cl := core.Client(t, "test")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, id := range []string{"control", "other"} {
		if _, err := cl.Send(ctx, fsm.Command{Type: fsm.Create, Workspace: id}); err != nil {
			t.Fatal(err)
		}
	}
	h, err := core.Store.Load(ctx, "other")
	if err != nil {
		t.Fatal(err)
	}
	otherEnv, err := json.Marshal(h.Last) // a valid envelope, of "other"
	if err != nil {
		t.Fatal(err)
	}
	bad := badShapes(t, otherEnv)
	names := core.Store.Names()
	var last uint64
	for _, data := range bad {
		m := nats.NewMsg(names.Event("control"))
		m.Data = data
		ack, err := core.JS.PublishMsg(ctx, m)
		if err != nil {
			t.Fatal(err)
		}
		last = ack.Sequence
	}

	h, err = core.Store.Load(ctx, "control")
	if err != nil {
		t.Fatalf("Load with an unreadable newest message: %v", err)
	}
	if h.State.Status != fsm.Provisioning || h.State.Generation != 1 || h.StreamSeq != last || h.Last == nil || h.Last.Seq != 1 {
		t.Fatalf("Load = state %s gen %d, stream seq %d (want provisioning, 1, %d)", h.State.Status, h.State.Generation, h.StreamSeq, last)
	}
	// Past a long run of them Load reads the history; with nothing
	// readable the workspace does not exist, but the next append still
	// goes after them.
	if _, err := cl.Send(ctx, fsm.Command{Type: fsm.Create, Workspace: "many"}); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"many", "ghost"} {
		for range 20 {
			m := nats.NewMsg(names.Event(id))
			m.Data = []byte(`{"garbage":true}`)
			ack, err := core.JS.PublishMsg(ctx, m)
			if err != nil {
				t.Fatal(err)
			}
			last = ack.Sequence
		}
	}
	if h, err := core.Store.Load(ctx, "many"); err != nil || h.Last == nil || h.State.Status != fsm.Provisioning {
		t.Fatalf("Load after 20 unreadable messages: %+v, %v", h, err)
	}
	if h, err := core.Store.Load(ctx, "ghost"); err != nil || h.Last != nil || h.State.Status != fsm.None || h.StreamSeq != last {
		t.Fatalf("Load of nothing readable: %+v, %v (want no state, stream seq %d)", h, err, last)
	}
	if o, err := cl.Send(ctx, fsm.Command{Type: fsm.Create, Workspace: "ghost"}); err != nil || o.Outcome != fsm.Accepted {
		t.Fatalf("create ghost after unreadable messages: %+v, %v", o, err)
	}

	o, err := cl.Send(ctx, fsm.Command{Type: fsm.Stop, Workspace: "control"})
	if err != nil || o.Outcome != fsm.Accepted {
		t.Fatalf("stop control after unreadable messages: %+v, %v", o, err)
	}

	reasons := map[string]int{}
	var evs []uint64
	err = core.Store.HistoryRecords(ctx, "control", func(r events.Record) error {
		switch {
		case r.Event != nil:
			evs = append(evs, r.Event.Seq)
		case r.Unreadable != nil:
			reasons[events.ReasonOf(r.Unreadable)]++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int{events.ReasonMalformed: 2, events.ReasonFutureSchema: 1, events.ReasonMisaddressed: 1, events.ReasonTooLarge: 1}
	if len(evs) != 2 || evs[1] != 2 || !sameCounts(reasons, want) {
		t.Fatalf("HistoryRecords: events %v, unreadable by reason %v (want events [1 2], %v)", evs, reasons, want)
	}
	n := 0
	if err := core.Store.History(ctx, "control", func(events.Envelope) error { n++; return nil }); err != nil || n != 2 {
		t.Fatalf("History: %d events, %v", n, err)
	}

	reasons = map[string]int{}
	if err := core.Store.Replay(ctx, 1, 0, func(r events.Record) error {
		if r.Unreadable != nil {
			reasons[events.ReasonOf(r.Unreadable)]++
		}
		return nil
	}); err != nil || reasons[events.ReasonMalformed] != want[events.ReasonMalformed]+40 {
		t.Fatalf("Replay: unreadable by reason %v, %v (want %v and 40 more malformed)", reasons, err, want)
	}

	end, err := core.Store.LastSeq(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sctx, scancel := context.WithCancel(ctx)
	defer scancel()
	seen := 0
	err = core.Store.Subscribe(sctx, 1, func(r events.Record) error {
		if r.Unreadable != nil {
			seen++
		}
		if r.StreamSeq == end {
			scancel()
		}
		return nil
	})
	if sctx.Err() == nil || seen != len(bad)+40 {
		t.Fatalf("Subscribe ended with %v after %d unreadable messages (want %d, through %d)", err, seen, len(bad)+40, end)
	}
}

func sameCounts(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}
