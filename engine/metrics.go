package engine

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/turnstile-dev/turnstile/fsm"
)

// Metrics are the engine's Prometheus collectors.
type Metrics struct {
	Commands  *prometheus.CounterVec
	Latency   prometheus.Histogram
	Conflicts prometheus.Counter
	Batches   prometheus.Histogram
	// CommitSeconds is the time one batch's events and their outcomes take
	// to be written, until the server's ack of the last.
	CommitSeconds prometheus.Histogram
	// BatchFallbacks counts batches of which some write was refused
	// (usually one workspace's CAS conflict), then written one at a time.
	BatchFallbacks prometheus.Counter
	// Overflows counts commands refused busy, undecided, because their
	// workspace already had MaxPendingPerWorkspace commands waiting.
	Overflows prometheus.Counter
	// ReportIDConflicts counts system reports whose id held another
	// command's outcome (an alert: the report was not applied).
	ReportIDConflicts prometheus.Counter
	// UnreadableOutcomes counts commands acked undecided because their id
	// already held an outcome that cannot be decoded (an alert).
	UnreadableOutcomes prometheus.Counter
	// CatchUps counts catch-ups after a gap in the deliveries (gap.go);
	// CaughtUp, the commands they queued.
	CatchUps prometheus.Counter
	CaughtUp prometheus.Counter
	// Partitions is how many command partitions this engine pulls now;
	// Takeovers counts the partitions it took (owner.go).
	Partitions prometheus.Gauge
	Takeovers  prometheus.Counter
}

// NewMetrics creates the collectors and registers them on reg (if not nil).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Commands: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "turnstile_commands_total", Help: "Commands handled, by type and outcome (accepted, noop, rejected, stale).",
		}, []string{"type", "outcome"}),
		Latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "turnstile_command_latency_seconds", Help: "Time from a command's arrival in the stream to its recorded outcome.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}),
		Conflicts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "turnstile_append_conflicts_total", Help: "Appends refused because another writer appended first (then reloaded and decided again).",
		}),
		Batches: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "turnstile_commit_batch_commands", Help: "Commands written at once.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 10),
		}),
		CommitSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "turnstile_commit_batch_seconds", Help: "Time to write one batch's events and their outcomes, until the server's last ack.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}),
		BatchFallbacks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "turnstile_commit_batch_fallbacks_total", Help: "Batches of which some write was refused, rewritten one command at a time.",
		}),
		Overflows: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "turnstile_engine_overflow_total", Help: "Commands refused busy without being decided: their workspace already had --max-pending-per-workspace commands waiting.",
		}),
		ReportIDConflicts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "turnstile_report_id_conflicts_total",
			Help: "System reports whose id already held another command's outcome (another workspace, generation or kind of report): not applied; an alert.",
		}),
		UnreadableOutcomes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "turnstile_engine_unreadable_outcomes_total",
			Help: "Commands acked without a decision because their id already held a stored outcome that cannot be decoded (written by an older build, or forged): an alert.",
		}),
		CatchUps: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "turnstile_engine_gap_catchups_total",
			Help: "Catch-ups after a gap in the engine's deliveries (a pull response lost with a NATS node): the commands taken and not finished were read again.",
		}),
		CaughtUp: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "turnstile_engine_gap_recovered_total",
			Help: "Commands queued by catch-ups ahead of their workspaces' later commands, instead of waiting for the ack wait.",
		}),
		Partitions: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "turnstile_engine_partitions",
			Help: "Command partitions this engine pulls now (each has one engine across serves).",
		}),
		Takeovers: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "turnstile_engine_partition_takeovers_total",
			Help: "Command partitions this engine took (at start, from an engine that left or died, or in a rebalance).",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.Commands, m.Latency, m.Conflicts, m.Batches, m.CommitSeconds, m.BatchFallbacks, m.Overflows, m.ReportIDConflicts,
			m.UnreadableOutcomes, m.CatchUps, m.CaughtUp, m.Partitions, m.Takeovers)
	}
	return m
}

func (m *Metrics) observe(t fsm.CommandType, o fsm.Outcome, seconds float64) {
	if m == nil {
		return
	}
	m.Commands.WithLabelValues(string(t), string(o)).Inc()
	m.Latency.Observe(seconds)
}
