package webhook

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/turnstile-dev/turnstile/internal/quarantine"
)

// Delivery results (turnstile_webhook_deliveries_total), one per event per
// webhook.
const (
	ResultDelivered = "delivered" // a 2xx answer, then acked
	ResultFiltered  = "filtered"  // a type the webhook did not ask for; acked unsent
)

// Failed attempt reasons (turnstile_webhook_retries_total): each is
// followed by another attempt after a back-off.
const (
	ReasonStatus    = "status"    // the receiver answered, not 2xx
	ReasonTransport = "transport" // no answer: refused, reset, timed out, TLS
	ReasonForbidden = "forbidden" // the destination resolved to an internal address
	ReasonRender    = "render"    // the event could not be described (NATS did not answer)
	ReasonNATS      = "nats"      // not tried: NATS did not say whether the event is still this serve's
)

// metrics are the dispatcher's collectors.
type metrics struct {
	deliveries  *prometheus.CounterVec
	retries     *prometheus.CounterVec
	lag         *prometheus.GaugeVec
	quarantined *quarantine.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "turnstile_webhook_deliveries_total",
			Help: "Events done per webhook, by result: delivered (a 2xx answer) or filtered (a type the webhook does not take).",
		}, []string{"result"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "turnstile_webhook_retries_total",
			Help: "Failed webhook delivery attempts, each retried after a back-off, by reason: status, transport, forbidden, render, nats (a retry not made: NATS did not say whether the event is still this serve's).",
		}, []string{"reason"}),
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "turnstile_webhook_lag",
			Help: "Events waiting for delivery to a webhook, the one being tried included, by webhook id.",
		}, []string{"webhook"}),
	}
	var err error
	if m.quarantined, err = quarantine.NewCounter("webhook", reg); err != nil {
		return nil, err
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.deliveries, m.retries, m.lag} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("webhook metrics: %w", err)
			}
		}
	}
	return m, nil
}
