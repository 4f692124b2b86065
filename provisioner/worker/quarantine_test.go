package worker_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/internal/quarantine"
	"github.com/turnstile-dev/turnstile/provisioner/worker"
)

// TestUnreadableEventsStallNothing publishes unreadable messages (garbage,
// invalid JSON, another schema, too large, an envelope of another
// workspace) straight on a workspace's event subject. Issue 12 item 5: on
// main the supervisor resubscribed at the first of them for ever, so no
// later workspace got a deadline, and the engine could not load the
// workspace ("stop control timed out"). Now the supervisor still fails a
// workspace that overruns its deadline, without a resubscribe loop (it
// counts each message exactly once), and the worker acts on later events,
// of that workspace too.
func TestUnreadableEventsStallNothing(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := worker.NewMetrics(reg)
	r := newRig(t, newSim(t, 0, 5*time.Millisecond), rigOptions{metrics: m,
		deadlines: map[fsm.Status]time.Duration{fsm.Provisioning: 2 * time.Second}})
	for _, id := range []string{"control", "other"} {
		r.send(t, fsm.Command{Type: fsm.Create, Workspace: id})
		r.wait(t, id, fsm.Running, 1, 20*time.Second)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	h, err := r.core.Store.Load(ctx, "other")
	if err != nil {
		t.Fatal(err)
	}
	other, err := json.Marshal(h.Last)
	if err != nil {
		t.Fatal(err)
	}
	bad := []string{`{"garbage":true}`, `{"id": "e1", "workspace": `, `{"schema_version":1,"id":"x"}`,
		`{"garbage":"` + strings.Repeat("x", events.MaxEnvelopeBytes) + `"}`, string(other)}
	for _, b := range bad {
		msg := nats.NewMsg(r.core.Store.Names().Event("control"))
		msg.Data = []byte(b)
		if _, err := r.core.JS.PublishMsg(ctx, msg); err != nil {
			t.Fatal(err)
		}
	}

	// A workspace that overruns its deadline still fails by it.
	r.send(t, fsm.Command{Type: fsm.Create, Workspace: "late", Spec: &fsm.Spec{Env: map[string]string{"AGENT_START_DELAY": "1h"}}})
	if st := r.wait(t, "late", fsm.Failed, 1, 30*time.Second); !strings.Contains(st.LastError, "deadline") {
		t.Fatalf("late failed with %q, want the provisioning deadline", st.LastError)
	}
	// The worker acts on later events, the poisoned workspace's included.
	if o := r.send(t, fsm.Command{Type: fsm.Stop, Workspace: "control"}); o.Outcome != fsm.Accepted {
		t.Fatalf("stop control: %+v", o)
	}
	r.wait(t, "control", fsm.Stopped, 2, 20*time.Second)
	r.send(t, fsm.Command{Type: fsm.Create, Workspace: "after"})
	r.wait(t, "after", fsm.Running, 1, 20*time.Second)

	// Each unreadable message was skipped once by each reader: no
	// resubscribe loop, no redelivery.
	want := float64(len(bad))
	if got := total(m.SupervisorQuarantined); got != want {
		t.Errorf("supervisor quarantined %v messages, want %v", got, want)
	}
	if got := total(m.WorkerQuarantined); got != want {
		t.Errorf("worker quarantined %v messages, want %v", got, want)
	}
	if got := m.SupervisorQuarantined.Value(events.ReasonMisaddressed); got != 1 {
		t.Errorf("supervisor quarantined %v misaddressed envelopes, want 1", got)
	}
}

func total(c *quarantine.Counter) float64 {
	n := 0.0
	for _, r := range []string{events.ReasonMalformed, events.ReasonUnknownType, events.ReasonFutureSchema,
		events.ReasonTooLarge, events.ReasonMisaddressed} {
		n += c.Value(r)
	}
	return n
}
