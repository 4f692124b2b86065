package quarantine_test

import (
	"errors"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/internal/quarantine"
)

// Every component registers the same metric on serve's one registry; the
// registry must take them all and serve one series per component and
// reason (issue 12 item 5).
func TestComponentsShareOneRegistry(t *testing.T) {
	reg := prometheus.NewRegistry()
	counters := map[string]*quarantine.Counter{}
	for _, c := range []string{"projector", "worker", "supervisor"} {
		q, err := quarantine.NewCounter(c, reg)
		if err != nil {
			t.Fatal(err)
		}
		counters[c] = q
	}
	if _, err := quarantine.NewCounter("worker", reg); err == nil {
		t.Fatal("a second counter of one component registered")
	}
	u := &events.Unreadable{StreamSeq: 7, Subject: "turnstile.evt.x", Data: []byte("{"), Err: events.ErrMalformed}
	counters["worker"].Add(nil, u)
	counters["worker"].Add(nil, &events.Unreadable{Err: errors.Join(events.ErrMisaddressed)})
	var none *quarantine.Counter
	none.Add(nil, u) // counts nothing, and does not panic
	if got := counters["worker"].Value(events.ReasonMalformed); got != 1 {
		t.Fatalf("worker malformed = %v, want 1", got)
	}
	if got := counters["worker"].Value(events.ReasonMisaddressed); got != 1 {
		t.Fatalf("worker misaddressed = %v, want 1", got)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	series := 0
	for _, mf := range mfs {
		if mf.GetName() == quarantine.MetricName {
			series += len(mf.GetMetric())
		}
	}
	if series != 2 {
		t.Fatalf("%d series, want 2", series)
	}
}
