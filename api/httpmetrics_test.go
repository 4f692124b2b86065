package api_test

import (
	"net/http"
	"strings"
	"testing"
)

// TestHTTPMetricsByRoute: requests are counted and timed by the mux
// pattern and status code, never by the raw path (a path per workspace
// would be a series per workspace), refused ones included (issue 14 item 7).
func TestHTTPMetricsByRoute(t *testing.T) {
	e := newEnv(t, envOptions{noReadModel: true})
	e.wantStatus(t, e.do(t, "GET", "/v1/workspaces/alpha", ""), http.StatusServiceUnavailable)
	e.wantStatus(t, e.do(t, "GET", "/v1/workspaces/beta", ""), http.StatusServiceUnavailable)
	e.wantStatus(t, e.do(t, "GET", "/v1/workspaces/beta/events", ""), http.StatusNotFound)
	e.wantStatus(t, e.do(t, "PATCH", "/v1/workspaces/beta", ""), http.StatusMethodNotAllowed)
	anon := &env{openapi: e.openapi, t: e.t, srv: e.srv}
	e.wantStatus(t, anon.do(t, "GET", "/v1/workspaces/gamma", ""), http.StatusUnauthorized)

	mfs, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	counts := map[string]float64{}
	timed := map[string]uint64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var route, code string
			for _, l := range m.GetLabel() {
				switch l.GetName() {
				case "route":
					route = l.GetValue()
				case "code":
					code = l.GetValue()
				}
			}
			switch mf.GetName() {
			case "turnstile_http_requests_total":
				counts[route+" "+code] = m.GetCounter().GetValue()
			case "turnstile_http_request_duration_seconds":
				timed[route+" "+code] = m.GetHistogram().GetSampleCount()
			default:
				continue
			}
			for _, id := range []string{"alpha", "beta", "gamma"} {
				if strings.Contains(route, id) {
					t.Errorf("%s has a raw path as its route: %q", mf.GetName(), route)
				}
			}
		}
	}
	for key, want := range map[string]float64{
		"GET /v1/workspaces/{id} 503":        2,
		"GET /v1/workspaces/{id}/events 404": 1,
		"none 405":                           1,
		"GET /v1/workspaces/{id} 401":        1,
	} {
		if counts[key] != want {
			t.Errorf("turnstile_http_requests_total{%s} = %v, want %v (all: %v)", key, counts[key], want, counts)
		}
		if timed[key] != uint64(want) {
			t.Errorf("turnstile_http_request_duration_seconds{%s} count = %v, want %v", key, timed[key], want)
		}
	}
}
