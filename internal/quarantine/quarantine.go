package quarantine

import (
	"fmt"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/turnstile-dev/turnstile/events"
)

// MetricName is the counter every component registers.
const MetricName = "turnstile_quarantined_messages_total"

// Counter counts one component's quarantined messages by reason. A nil
// *Counter counts nothing.
type Counter struct {
	component string
	vec       *prometheus.CounterVec
}

// NewCounter registers component's counter on reg (nil: registers
// nothing).
func NewCounter(component string, reg prometheus.Registerer) (*Counter, error) {
	c := &Counter{component: component, vec: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name:        MetricName,
		Help:        "Event-stream messages skipped because no reader can use them (undecodable or misaddressed), by component and reason.",
		ConstLabels: prometheus.Labels{"component": component},
	}, []string{"reason"})}
	if reg != nil {
		if err := reg.Register(c.vec); err != nil {
			return nil, fmt.Errorf("quarantine metric of %s: %w", component, err)
		}
	}
	return c, nil
}

// Add counts u and logs it once, at warn: the caller calls it once per
// message it skips.
func (c *Counter) Add(log *slog.Logger, u *events.Unreadable) {
	reason := events.ReasonOf(u)
	if c != nil {
		c.vec.WithLabelValues(reason).Inc()
	}
	if log != nil {
		component := ""
		if c != nil {
			component = c.component
		}
		log.Warn("quarantined an unreadable stream message; skipping it", "component", component,
			"stream_seq", u.StreamSeq, "subject", u.Subject, "bytes", len(u.Data), "reason", reason, "err", u.Err)
	}
}

// Value is how many messages of reason c counted (tests and diagnostics).
func (c *Counter) Value(reason string) float64 {
	if c == nil {
		return 0
	}
	m, err := c.vec.GetMetricWithLabelValues(reason)
	if err != nil {
		return 0
	}
	var out dto.Metric
	if err := m.Write(&out); err != nil {
		return 0
	}
	return out.GetCounter().GetValue()
}
