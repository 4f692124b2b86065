package api

import (
	"context"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/turnstile-dev/turnstile/read"
)

// WorkspaceCollector reports turnstile_workspaces{state} from the read
// model at each scrape (one GROUP BY query, bounded to 2s).
type WorkspaceCollector struct {
	pool *pgxpool.Pool
	log  *slog.Logger
	desc *prometheus.Desc
}

var _ prometheus.Collector = (*WorkspaceCollector)(nil)

// NewWorkspaceCollector returns the collector; register it on the registry
// that serves /metrics.
func NewWorkspaceCollector(pool *pgxpool.Pool, log *slog.Logger) *WorkspaceCollector {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &WorkspaceCollector{pool: pool, log: log, desc: prometheus.NewDesc("turnstile_workspaces",
		"Workspaces by state, from the read model.", []string{"state"}, nil)}
}

// Describe implements prometheus.Collector.
func (c *WorkspaceCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

// Collect implements prometheus.Collector.
func (c *WorkspaceCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	counts, err := read.CountByStatus(ctx, c.pool)
	if err != nil {
		c.log.Warn("metrics: workspaces by state", "err", err)
		return
	}
	for st, n := range counts {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(n), st.String())
	}
}

// metrics are the API's own: open waits, refused requests, and requests
// by route and code.
type metrics struct {
	waits   prometheus.Gauge
	refused *prometheus.CounterVec
	http    httpMetrics
}

// newMetrics makes the API's metrics and registers them on reg, if any.
func newMetrics(reg prometheus.Registerer) (metrics, error) {
	m := metrics{
		waits: prometheus.NewGauge(prometheus.GaugeOpts{Name: "turnstile_api_waits_open",
			Help: "GET .../wait requests, follow streams and GET /v1/audit requests open now (capped by --http-max-waits)."}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "turnstile_api_refused_total",
			Help: "Requests the API refused before their route, by code: unauthorized, wrong_host, cross_origin, unsupported_media_type, too_many_waits."},
			[]string{"code"}),
		http: newHTTPMetrics(),
	}
	if reg != nil {
		for _, c := range append([]prometheus.Collector{m.waits, m.refused}, m.http.collectors()...) {
			if err := reg.Register(c); err != nil {
				return metrics{}, err
			}
		}
	}
	return m, nil
}
