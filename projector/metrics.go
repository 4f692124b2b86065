package projector

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/turnstile-dev/turnstile/internal/quarantine"
)

// metrics are the projector's instruments, labelled with its name so that
// several projectors can share a registry.
type metrics struct {
	lagMessages prometheus.Gauge
	lagSeconds  prometheus.Gauge
	checkpoint  prometheus.Gauge
	messages    prometheus.Counter
	skipped     prometheus.Counter
	batches     prometheus.Counter
	errors      prometheus.Counter
	delay       prometheus.Histogram
	quarantined *quarantine.Counter
}

func newMetrics(name string, reg prometheus.Registerer) (*metrics, error) {
	labels := prometheus.Labels{"projector": name}
	opts := func(n, help string) prometheus.Opts {
		return prometheus.Opts{Namespace: "turnstile", Subsystem: "projector", Name: n, Help: help, ConstLabels: labels}
	}
	m := &metrics{
		lagMessages: prometheus.NewGauge(prometheus.GaugeOpts(opts("lag_messages",
			"Stream messages not yet applied to the read model."))),
		lagSeconds: prometheus.NewGauge(prometheus.GaugeOpts(opts("lag_seconds",
			"How long the oldest message not yet applied has been in the stream; 0 when caught up."))),
		checkpoint: prometheus.NewGauge(prometheus.GaugeOpts(opts("checkpoint",
			"Last stream sequence applied."))),
		messages: prometheus.NewCounter(prometheus.CounterOpts(opts("messages_total",
			"Stream messages applied."))),
		skipped: prometheus.NewCounter(prometheus.CounterOpts(opts("skipped_sequences_total",
			"Stream sequences passed that the stream no longer held (expired outcomes)."))),
		batches: prometheus.NewCounter(prometheus.CounterOpts(opts("batches_total",
			"Transactions committed."))),
		errors: prometheus.NewCounter(prometheus.CounterOpts(opts("errors_total",
			"Failed sessions (PostgreSQL or NATS errors, checkpoint conflicts); each is retried."))),
		delay: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "turnstile", Subsystem: "projector",
			Name: "apply_delay_seconds", ConstLabels: labels,
			Help:    "From a message's arrival in the stream to the commit that applied it.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 16)}),
	}
	component := "projector"
	if name != DefaultName {
		component += ":" + name
	}
	q, err := quarantine.NewCounter(component, reg)
	if err != nil {
		return nil, fmt.Errorf("projector metrics: %w", err)
	}
	m.quarantined = q
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.lagMessages, m.lagSeconds, m.checkpoint, m.messages, m.skipped, m.batches, m.errors, m.delay} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("projector metrics: %w", err)
		}
	}
	return m, nil
}
