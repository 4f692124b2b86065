package events_test

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/internal/testenv"
)

// PendingCommands (the API's queued-commands view) asks for a page's
// outcomes in one request, not one direct get per command, and lists
// exactly the commands without one.
func TestPendingCommandsLooksUpByThePage(t *testing.T) {
	n := testenv.StartNATS(t, testenv.NATSOptions{})
	nc, js := n.Connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	names := events.NewNames("")
	if err := events.EnsureStreams(ctx, js, names, events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	store, err := events.OpenStore(ctx, js, names, events.Codec{})
	if err != nil {
		t.Fatal(err)
	}
	const total = 200
	for i := range total {
		id := fmt.Sprintf("q-%03d", i)
		data, err := events.EncodeCommand(fsm.Command{ID: id, Type: fsm.Stop, Workspace: "queued"})
		if err != nil {
			t.Fatal(err)
		}
		m := nats.NewMsg(names.Command("queued"))
		m.Data = data
		m.Header.Set(jetstream.MsgIDHeader, id)
		if _, err := js.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 { // every other one decided
			o := events.OutcomeRecord{CommandID: id, Workspace: "queued", CommandType: fsm.Stop, Outcome: fsm.Rejected,
				Rejection: fsm.Invalid(fsm.Stop, "decided"), ReceivedAt: time.Now().UTC(), DecidedAt: time.Now().UTC()}
			if res, _ := store.Commit(ctx, []events.Write{{Outcome: o}}, events.CommitOptions{}); res[0].Err != nil {
				t.Fatal(res[0].Err)
			}
		}
	}
	var gets atomic.Int64
	prefix := "$JS.API.DIRECT.GET." + names.EventStream()
	if _, err := nc.Subscribe("$JS.API.DIRECT.GET.>", func(m *nats.Msg) {
		if strings.HasPrefix(m.Subject, prefix) {
			gets.Add(1)
		}
	}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	pending, err := store.PendingCommands(ctx, "queued", events.DefaultEngineDurable, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if len(pending) != total/2 {
		t.Fatalf("%d pending, want %d", len(pending), total/2)
	}
	for i, p := range pending {
		if want := fmt.Sprintf("q-%03d", 2*i+1); p.Command.ID != want {
			t.Fatalf("pending[%d] is %s, want %s", i, p.Command.ID, want)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if got := gets.Load(); got > 2 {
		t.Errorf("%d direct gets on the event stream for %d commands, want at most 2", got, total)
	}
}
