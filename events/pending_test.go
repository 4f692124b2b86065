package events_test

import (
	"context"
	"fmt"
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
	store, js := commitEnv(t)
	names := store.Names()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
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
	gets := testenv.DirectGets(t, js.Conn(), "DIRECT.GET."+names.EventStream())
	pending, err := store.PendingCommands(ctx, "queued", events.DefaultEngineDurable, 1000, nil)
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
	if got := gets(); got > 2 {
		t.Errorf("%d direct gets on the event stream for %d commands, want at most 2", got, total)
	}
}

// A command's headers are its sender's: one that carries Nats-Sequence or
// Nats-Time-Stamp of its own must not pass for the server's (a direct
// get's answer has the stored headers first, the server's after them), so
// it can neither hide the commands queued behind it nor fail the read.
func TestPendingCommandsIgnoreForgedHeaders(t *testing.T) {
	store, js := commitEnv(t)
	names := store.Names()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i, forged := range []map[string]string{
		{jetstream.SequenceHeader: "9000000000000000000"},
		{jetstream.TimeStampHeaer: "not a time"},
		{jetstream.SubjectHeader: names.Command("elsewhere")},
		nil,
	} {
		id := fmt.Sprintf("h-%d", i)
		data, err := events.EncodeCommand(fsm.Command{ID: id, Type: fsm.Stop, Workspace: "forged"})
		if err != nil {
			t.Fatal(err)
		}
		m := nats.NewMsg(names.Command("forged"))
		m.Data = data
		m.Header.Set(jetstream.MsgIDHeader, id)
		for k, v := range forged {
			m.Header.Set(k, v)
		}
		if _, err := js.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	pending, err := store.PendingCommands(ctx, "forged", events.DefaultEngineDurable, 1000, nil)
	if err != nil {
		t.Fatalf("pending commands: %v", err)
	}
	if len(pending) != 4 {
		t.Fatalf("%d pending, want 4: %+v", len(pending), pending)
	}
	for i, p := range pending {
		if p.StreamSeq != uint64(i+1) || p.Time.IsZero() {
			t.Fatalf("pending[%d] at stream sequence %d, time %v: want %d and the time it was stored", i, p.StreamSeq, p.Time, i+1)
		}
	}
}

// A user command may carry any header, Status too, and an empty body:
// read back in a direct get's answer it looked like the server's own
// status (nats.go reads a "Status" header line as the status), so
// PendingCommands, which reads the command stream, ended at a forged
// 204 (end of batch) and failed at a forged 503 or 408: the API's explain
// showed a workspace's queue cut short, or nothing.
func TestPendingCommandsPastForgedStatus(t *testing.T) {
	for _, status := range []string{"204", "404", "408", "503"} {
		t.Run(status, func(t *testing.T) {
			store, js := commitEnv(t)
			names := store.Names()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			publish := func(h nats.Header, data []byte) {
				m := nats.NewMsg(names.Command("queued"))
				m.Header, m.Data = h, data
				if _, err := js.PublishMsg(ctx, m); err != nil {
					t.Fatal(err)
				}
			}
			for _, id := range []string{"before", "after"} {
				data, err := events.EncodeCommand(fsm.Command{ID: id, Type: fsm.Stop, Workspace: "queued"})
				if err != nil {
					t.Fatal(err)
				}
				publish(nats.Header{jetstream.MsgIDHeader: {id}}, data)
				if id == "before" {
					publish(nats.Header{"Status": {status}, "Description": {"forged"}}, nil)
				}
			}
			pending, err := store.PendingCommands(ctx, "queued", events.DefaultEngineDurable, 1000, nil)
			if err != nil {
				t.Fatalf("past a stored message with Status %s: %v", status, err)
			}
			var ids []string
			for _, p := range pending {
				ids = append(ids, p.Command.ID)
			}
			if fmt.Sprint(ids) != "[before after]" {
				t.Fatalf("past a stored message with Status %s: pending %v, want [before after]", status, ids)
			}
		})
	}
}

// A queued command's actor that reads as the HTTP API's is proven only by
// the API's proof under the actor key, as the engine checks it: one
// written by a NATS user (no proof, a proof under another key, one made
// outside the duplicate window) is unproven, and without the key none is.
func TestPendingCommandsCheckActorProof(t *testing.T) {
	store, js := commitEnv(t)
	names := store.Names()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	key, other := make([]byte, events.ActorKeySize), make([]byte, events.ActorKeySize)
	key[0], other[0] = 1, 2
	cases := []struct {
		id, actor string
		proof     func(data []byte) string
		unproven  bool // under key
	}{
		{id: "plain", actor: "someone"},
		{id: "none", actor: "api:default", unproven: true},
		{id: "lookalike", actor: "аpi:default", unproven: true}, // Cyrillic а
		{id: "other-key", actor: "api:default", proof: func(d []byte) string { return events.ActorProof(other, time.Now(), d) }, unproven: true},
		{id: "stale", actor: "api:default", proof: func(d []byte) string { return events.ActorProof(key, time.Now().Add(-time.Hour), d) }, unproven: true},
		{id: "proven", actor: "api:default", proof: func(d []byte) string { return events.ActorProof(key, time.Now(), d) }},
	}
	for _, c := range cases {
		data, err := events.EncodeCommand(fsm.Command{ID: c.id, Type: fsm.Stop, Workspace: "proof", Actor: c.actor})
		if err != nil {
			t.Fatal(err)
		}
		m := nats.NewMsg(names.Command("proof"))
		m.Data = data
		m.Header.Set(jetstream.MsgIDHeader, c.id)
		if c.proof != nil {
			m.Header.Set(events.ActorProofHeader, c.proof(data))
		}
		if _, err := js.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	for _, k := range [][]byte{key, nil} {
		pending, err := store.PendingCommands(ctx, "proof", events.DefaultEngineDurable, 1000, k)
		if err != nil {
			t.Fatal(err)
		}
		if len(pending) != len(cases) {
			t.Fatalf("%d pending, want %d", len(pending), len(cases))
		}
		for i, p := range pending {
			c := cases[i]
			want := c.unproven || k == nil && c.actor != "someone"
			if p.Command.ID != c.id || p.ActorUnproven != want {
				t.Errorf("with key %v: %s (actor %q) unproven %v, want %s unproven %v", k != nil, p.Command.ID, p.Command.Actor, p.ActorUnproven, c.id, want)
			}
		}
	}
}
