package projector_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/projector"
)

// badMessage is one message no reader can use and the reason the
// projector must record for it.
type badMessage struct {
	reason string
	msg    *nats.Msg
}

// badMessages are unreadable messages of every shape on subjects of the
// generator's live workspaces: garbage, invalid JSON, JSON of another
// schema, a newer schema, a payload too large, an envelope of another
// workspace and outcome records that are garbage or name another command.
// later is the id of a command g decides after them.
func badMessages(tb testing.TB, e *env, g *generator, later string) []badMessage {
	tb.Helper()
	victim, other := g.ids[0], g.ids[1]
	st, err := e.js.Stream(context.Background(), e.names.EventStream())
	if err != nil {
		tb.Fatal(err)
	}
	last, err := st.GetLastMsgForSubject(context.Background(), e.names.Event(other))
	if err != nil {
		tb.Fatal(err)
	}
	// An outcome of a command the generator decides later, published
	// first, on another command's subject: were it taken, it would count
	// as that command's outcome (the first one counts).
	forged, err := events.EncodeOutcome(events.OutcomeRecord{CommandID: later, Workspace: victim,
		CommandType: fsm.Create, Outcome: fsm.Rejected, State: fsm.None, Rejection: &fsm.Rejection{Code: fsm.CodeExists, Message: "forged"}})
	if err != nil {
		tb.Fatal(err)
	}
	msg := func(subject, data string) *nats.Msg {
		m := nats.NewMsg(subject)
		m.Data = []byte(data)
		return m
	}
	evt := e.names.Event(victim)
	return []badMessage{
		{events.ReasonMalformed, msg(evt, `{"garbage":true}`)},
		{events.ReasonMalformed, msg(evt, `{"id": "e1", "workspace": `)},
		{events.ReasonMalformed, msg(evt, "\xff\xfe not even text")},
		{events.ReasonMalformed, msg(evt, `{"id":"e1","workspace":"`+victim+`","seq":1,"generation":1,"type":"workspace.created"}`)},
		{events.ReasonFutureSchema, msg(evt, `{"schema_version":2,"type":"workspace.created","workspace":"`+victim+`"}`)},
		{events.ReasonUnknownType, msg(evt, strings.Replace(string(last.Data), `"type":"workspace.`, `"type":"workspace.pwned_`, 1))},
		{events.ReasonTooLarge, msg(evt, `{"garbage":"`+strings.Repeat("x", events.MaxEnvelopeBytes)+`"}`)},
		{events.ReasonMisaddressed, msg(evt, string(last.Data))},
		{events.ReasonMalformed, msg(e.names.Outcome("junk"), `{"garbage":true}`)},
		{events.ReasonMisaddressed, msg(e.names.Outcome("attacker"), string(forged))},
	}
}

// TestQuarantine publishes unreadable messages of every shape straight on
// the event stream, between good events: the projector records each in
// dead_letters, counts it, passes it and projects every good event after
// it, and a rebuild gives the same read model. Issue 12 item 5: on main
// the first of them stalled the projector for every workspace (the
// checkpoint never passed it).
func TestQuarantine(t *testing.T) {
	for _, slow := range []bool{false, true} {
		name := "fast"
		if slow {
			name = "slow"
		}
		t.Run(name, func(t *testing.T) {
			e := newEnv(t)
			g := newGenerator(e.names, 10, 7)
			g.publish(t, e.js, 200)
			// Its 100th command from here, well inside the last 200
			// events published.
			later := fmt.Sprintf("%sc%07d", g.prefix, g.n+100)
			bad := badMessages(t, e, g, later)
			for i, b := range bad {
				publishAll(t, e.js, b.msg)
				if i%3 == 0 {
					g.publish(t, e.js, 5)
				}
			}
			g.publish(t, e.js, 200)

			reg := prometheus.NewRegistry()
			p := e.projector(t, func(c *projector.Config) { c.Registerer = reg })
			if slow {
				projector.DecodeSlowly(p)
			}
			stop := run(t, p)
			e.waitCaughtUp(t, 60*time.Second)
			stop()
			if l, err := p.Lag(context.Background()); err != nil || l.Messages != 0 || l.Behind != 0 {
				t.Fatalf("lag %+v, %v: want none", l, err)
			}

			// The good events, all of them, and nothing of the bad.
			var evs, cmds int
			if err := e.pool.QueryRow(context.Background(), `SELECT (SELECT count(*) FROM workspace_events),
				(SELECT count(*) FROM commands)`).Scan(&evs, &cmds); err != nil {
				t.Fatal(err)
			}
			if evs != g.Events || cmds != g.n {
				t.Fatalf("read model has %d events and %d commands; the stream's good messages are %d and %d", evs, cmds, g.Events, g.n)
			}
			for id, w := range g.states {
				var status string
				var seq int64
				if err := e.pool.QueryRow(context.Background(), `SELECT status, last_event_seq FROM workspaces WHERE id = $1`, id).
					Scan(&status, &seq); err != nil {
					t.Fatalf("workspace %s: %v", id, err)
				}
				if status != w.Status.String() || seq != int64(w.Seq) {
					t.Fatalf("workspace %s is %s at event %d; its good events end %s at %d", id, status, seq, w.Status, w.Seq)
				}
			}
			var why string
			if err := e.pool.QueryRow(context.Background(), `SELECT coalesce(rejection_message, '') FROM commands
				WHERE command_id = $1`, later).Scan(&why); err != nil || why == "forged" {
				t.Fatalf("command %s: rejection %q, %v: the forged outcome on another subject must not count", later, why, err)
			}

			// One dead letter per bad message, with its reason and its
			// first bytes.
			rows, err := e.pool.Query(context.Background(), `SELECT subject, reason, size, length(data), error FROM dead_letters ORDER BY stream_seq`)
			if err != nil {
				t.Fatal(err)
			}
			var got []badMessage
			for rows.Next() {
				var subject, reason, msg string
				var size, kept int
				if err := rows.Scan(&subject, &reason, &size, &kept, &msg); err != nil {
					t.Fatal(err)
				}
				if kept != min(size, 4096) || msg == "" {
					t.Fatalf("dead letter on %s: %d of %d bytes kept, error %q", subject, kept, size, msg)
				}
				got = append(got, badMessage{reason, nats.NewMsg(subject)})
			}
			if err := rows.Err(); err != nil {
				t.Fatal(err)
			}
			if len(got) != len(bad) {
				t.Fatalf("%d dead letters, want %d", len(got), len(bad))
			}
			for i, b := range bad {
				if got[i].reason != b.reason || got[i].msg.Subject != b.msg.Subject {
					t.Errorf("dead letter %d: %s on %s, want %s on %s", i, got[i].reason, got[i].msg.Subject, b.reason, b.msg.Subject)
				}
			}

			// Counted once each, and no session failed on them.
			if n := counterSum(t, reg, "turnstile_quarantined_messages_total"); n != float64(len(bad)) {
				t.Errorf("turnstile_quarantined_messages_total = %v, want %d", n, len(bad))
			}
			if n := counterSum(t, reg, "turnstile_projector_errors_total"); n != 0 {
				t.Errorf("turnstile_projector_errors_total = %v, want 0", n)
			}

			stats := e.assertEqualsRebuild(t, e.projector(t, nil))
			if stats.Quarantined != len(bad) {
				t.Errorf("rebuild quarantined %d messages, want %d", stats.Quarantined, len(bad))
			}
		})
	}
}

// counterSum adds up every series of the counter name in reg.
func counterSum(tb testing.TB, reg *prometheus.Registry, name string) float64 {
	tb.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		tb.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

// TestNULCharacters: the engine accepts a NUL character in an actor, an
// env or label value or a reason (JSON "\u0000"), but PostgreSQL's text
// and jsonb refuse it. Issue 12 item 5: on main such an event, which any
// client could cause with one command, stalled the projector for every
// workspace. The projector stores U+FFFD in its place, in the
// incremental path and the rebuild alike.
func TestNULCharacters(t *testing.T) {
	e := newEnv(t)
	g := newGenerator(e.names, 5, 3)
	g.publish(t, e.js, 50)
	nul := "a\x00b"
	publishAll(t, e.js, history(t, e.names, "ws-nul", []fsm.Command{
		{Type: fsm.Create, Actor: nul, Spec: &fsm.Spec{Image: "img", Env: map[string]string{"A": nul}, Labels: map[string]string{"l": nul}}},
		{Type: fsm.ProvisionFailed, Reason: nul},
	}, nil)...)
	// An outcome record is checked less than an envelope: NUL anywhere
	// but in its ids (an invalid one is quarantined: TestWellFormedButUnstorable).
	o, err := events.EncodeOutcome(events.OutcomeRecord{CommandID: "nul-cmd", Workspace: "ws-nul", CommandType: fsm.CommandType(nul),
		Actor: nul, Outcome: fsm.Rejected, State: fsm.Status(nul), Rejection: &fsm.Rejection{Code: fsm.Code(nul), Message: nul}, Reason: nul})
	if err != nil {
		t.Fatal(err)
	}
	publishAll(t, e.js, &nats.Msg{Subject: e.names.Outcome("nul-cmd"), Data: o})
	g.publish(t, e.js, 50)
	p := e.projector(t, nil)
	stop := run(t, p)
	e.waitCaughtUp(t, 60*time.Second)
	stop()
	var actor, env, reason, lastErr string
	if err := e.pool.QueryRow(context.Background(), `SELECT e.actor, w.spec->'env'->>'A', e2.reason, w.last_error
		FROM workspaces w JOIN workspace_events e ON e.workspace_id = w.id AND e.seq = 1
		JOIN workspace_events e2 ON e2.workspace_id = w.id AND e2.seq = 2 WHERE w.id = 'ws-nul'`).
		Scan(&actor, &env, &reason, &lastErr); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{actor, env, reason, lastErr} {
		if s != "a\uFFFDb" {
			t.Fatalf("stored %q, want %q", s, "a\uFFFDb")
		}
	}
	var row string
	if err := e.pool.QueryRow(context.Background(), `SELECT concat_ws(',', workspace_id, type, actor, state, rejection_code,
		rejection_message, reason) FROM commands WHERE command_id = 'nul-cmd'`).Scan(&row); err != nil {
		t.Fatal(err)
	}
	if want := "ws-nul," + strings.Repeat("a\uFFFDb,", 5) + "a\uFFFDb"; row != want {
		t.Fatalf("outcome stored as %q, want %q", row, want)
	}
	e.assertEqualsRebuild(t, e.projector(t, nil))
}
