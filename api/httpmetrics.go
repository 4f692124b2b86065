package api

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// RouteNone is the route label of requests no route takes (404, 405).
const RouteNone = "none"

// httpMetrics count and time requests by route and status code. The route
// is the mux pattern ("GET /v1/workspaces/{id}"), never the raw path: a
// path carries workspace ids, which would make a series per workspace.
type httpMetrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

func newHTTPMetrics() httpMetrics {
	labels := []string{"route", "code"}
	return httpMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "turnstile_http_requests_total",
			Help: "HTTP API requests answered, by route (the mux pattern, or none) and status code."}, labels),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "turnstile_http_request_duration_seconds",
			Help: "HTTP API request durations, by route and status code; /wait is a long poll, up to its timeout.",
			// Up to 10 minutes: /wait's largest timeout by default.
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600}}, labels),
	}
}

func (m httpMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.requests, m.duration}
}

// measure records every request in the HTTP metrics, including those the
// guards refuse, labelled by the pattern mux would route it to.
func (s *Server) measure(mux *http.ServeMux, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		route := RouteNone
		if _, pattern := mux.Handler(r); pattern != "" && pattern != "/" {
			route = pattern
		}
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(rec, r)
		code := strconv.Itoa(rec.status)
		s.metrics.http.requests.WithLabelValues(route, code).Inc()
		s.metrics.http.duration.WithLabelValues(route, code).Observe(time.Since(start).Seconds())
	})
}
