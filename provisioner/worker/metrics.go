package worker

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/turnstile-dev/turnstile/internal/quarantine"
)

// Metrics are the worker's Prometheus collectors.
type Metrics struct {
	// Actions counts actions by kind (provision, stop, delete) and result
	// (succeeded, failed, superseded, abandoned).
	Actions *prometheus.CounterVec
	// Duration is how long actions took, by kind and result.
	Duration *prometheus.HistogramVec
	// Reports counts reports sent by the supervisor and watcher, by kind.
	Reports *prometheus.CounterVec
	// Running is how many actions hold a slot (at most
	// Config.MaxConcurrentActions); Waiting, how many wait for one.
	Running, Waiting prometheus.Gauge
	// WorkerQuarantined and SupervisorQuarantined count the event-stream
	// messages each skipped because no reader can use them
	// (turnstile_quarantined_messages_total, component "worker" and
	// "supervisor").
	WorkerQuarantined, SupervisorQuarantined *quarantine.Counter
	// ReportIDConflicts counts reports whose id held another command's
	// outcome (an alert; the report went out under another id).
	ReportIDConflicts prometheus.Counter
}

// NewMetrics creates the collectors and registers them on reg (if not nil).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Actions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "turnstile_actions_total", Help: "Provisioner actions by kind and result.",
		}, []string{"action", "result"}),
		Duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "turnstile_action_duration_seconds", Help: "Provisioner action duration (provision duration is action=\"provision\").",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 16),
		}, []string{"action", "result"}),
		Reports: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "turnstile_supervisor_reports_total", Help: "Deadline, exit and reconciler reports sent, by kind.",
		}, []string{"kind"}),
		Running: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "turnstile_actions_running", Help: "Provisioner actions running now (bounded by the worker's MaxConcurrentActions).",
		}),
		Waiting: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "turnstile_actions_waiting", Help: "Provisioner actions waiting for a free slot under the worker's MaxConcurrentActions.",
		}),
		ReportIDConflicts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "turnstile_worker_report_id_conflicts_total",
			Help: "Reports whose id already held another command's outcome (another workspace, generation or kind of report); sent again under another id. An alert.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.Actions, m.Duration, m.Reports, m.Running, m.Waiting, m.ReportIDConflicts)
	}
	var err error
	if m.WorkerQuarantined, err = quarantine.NewCounter("worker", reg); err != nil {
		panic(err) // as MustRegister above: a second registration is a wiring bug
	}
	if m.SupervisorQuarantined, err = quarantine.NewCounter("supervisor", reg); err != nil {
		panic(err)
	}
	return m
}

// workerQuarantine and supervisorQuarantine are the counters of skipped
// event-stream messages; nil (counting nothing) without metrics.
func (m *Metrics) workerQuarantine() *quarantine.Counter {
	if m == nil {
		return nil
	}
	return m.WorkerQuarantined
}

func (m *Metrics) supervisorQuarantine() *quarantine.Counter {
	if m == nil {
		return nil
	}
	return m.SupervisorQuarantined
}
func (m *Metrics) action(kind, result string, seconds float64) {
	if m == nil {
		return
	}
	m.Actions.WithLabelValues(kind, result).Inc()
	m.Duration.WithLabelValues(kind, result).Observe(seconds)
}

func (m *Metrics) report(kind string) {
	if m != nil {
		m.Reports.WithLabelValues(kind).Inc()
	}
}

func (m *Metrics) reportIDConflict() {
	if m != nil {
		m.ReportIDConflicts.Inc()
	}
}

func (m *Metrics) running(delta float64) {
	if m != nil {
		m.Running.Add(delta)
	}
}

func (m *Metrics) waiting(delta float64) {
	if m != nil {
		m.Waiting.Add(delta)
	}
}
