package worker_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/internal/testenv"
	"github.com/turnstile-dev/turnstile/provisioner/worker"
)

// outcomeOf waits for the outcome stored under id.
func (r *rig) outcomeOf(tb testing.TB, id string) events.OutcomeRecord {
	tb.Helper()
	var o events.OutcomeRecord
	testenv.Eventually(tb, 30*time.Second, "the outcome of "+id, func() bool {
		var ok bool
		var err error
		o, ok, err = r.core.Store.Outcome(context.Background(), id)
		if err != nil {
			tb.Fatal(err)
		}
		return ok
	})
	return o
}

// issue 12 item 3: a user who sends a command under the id the worker's
// report for victim's first provision will have (today's shape, or the
// old one without the reserved prefix) cannot keep victim provisioning for
// good: the reserved id is refused, the old one no longer matters.
func TestReportIDNotSquattable(t *testing.T) {
	r := newRig(t, newSim(t, 0, time.Millisecond), rigOptions{})
	names := events.NewNames("")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var refused []uint64
	for _, id := range []string{"provision-victim-g1", "sys-provision-victim-g1", "sys-deadline-victim-g1"} {
		// As `nats pub` or an HTTP Idempotency-Key would send it.
		m := nats.NewMsg(names.Command("nobody"))
		m.Data = []byte(`{"id":"` + id + `","type":"start","workspace":"nobody"}`)
		m.Header.Set(jetstream.MsgIDHeader, id)
		ack, err := r.core.JS.PublishMsg(ctx, m)
		if err != nil {
			t.Fatal(err)
		}
		refused = append(refused, ack.Sequence)
	}
	r.outcomeOf(t, "provision-victim-g1") // an ordinary id: not_found, harmless now
	for _, seq := range refused[1:] {
		if o := r.outcomeOf(t, fmt.Sprintf("invalid-%d", seq)); o.Outcome != fsm.Rejected || o.Rejection.Code != fsm.CodeInvalid {
			t.Fatalf("reserved id: %+v", o)
		}
	}
	r.send(t, fsm.Command{Type: fsm.Create, Workspace: "victim"})
	r.wait(t, "victim", fsm.Running, 1, 20*time.Second)
	if o := r.outcomeOf(t, "sys-provision-victim-g1"); o.Workspace != "victim" || o.Outcome != fsm.Accepted {
		t.Fatalf("the report's outcome: %+v", o)
	}
}

// issue 12 item 3: a report that finds another command's outcome under its
// id (here planted by a system client, as a misconfigured NATS would let
// anyone) does not count it as its own: it alerts (log, metric) and reports
// under the next deterministic id, and victim runs.
func TestReportFindsForeignOutcome(t *testing.T) {
	m := worker.NewMetrics(nil)
	r := newRig(t, newSim(t, 0, time.Millisecond), rigOptions{metrics: m})
	planter := r.core.SystemClient(t, "planter")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, id := range []string{"provision-victim-g1", "sys-provision-victim-g1"} {
		if _, err := planter.Send(ctx, fsm.Command{ID: id, Type: fsm.StopSucceeded, Workspace: "elsewhere", Generation: 1}); err != nil {
			t.Fatal(err)
		}
	}
	r.send(t, fsm.Command{Type: fsm.Create, Workspace: "victim"})
	r.wait(t, "victim", fsm.Running, 1, 20*time.Second)
	if n := testutil.ToFloat64(m.ReportIDConflicts); n != 1 {
		t.Fatalf("report id conflicts counted: %v, want 1", n)
	}
	if o := r.outcomeOf(t, "sys-provision-victim-g1-r1"); o.Workspace != "victim" || o.CommandType != fsm.ProvisionSucceeded || o.Outcome != fsm.Accepted {
		t.Fatalf("the report under its alternative id: %+v", o)
	}
}
