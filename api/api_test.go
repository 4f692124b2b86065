package api_test

import (
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/turnstile-dev/turnstile/api"
	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/internal/testenv"
)

func TestCommands(t *testing.T) {
	e := newEnv(t, envOptions{noReadModel: true})

	t.Run("CreateAccepted", func(t *testing.T) {
		r := e.do(t, "POST", "/v1/workspaces", `{"id":"alpha","spec":{"image":"agent:1","env":{"A":"1"},"cpus":0.5}}`)
		e.wantStatus(t, r, http.StatusAccepted)
		var res api.CommandResult
		r.decode(t, &res)
		if res.Outcome != fsm.Accepted || res.State != "provisioning" || res.Generation != 1 || res.EventSeq != 1 || res.CommandID == "" {
			t.Fatalf("create: %+v", res)
		}
		if loc := r.header.Get("Location"); loc != "/v1/workspaces/alpha" {
			t.Fatalf("Location %q", loc)
		}
	})

	t.Run("RestartWhileProvisioningIsBusy", func(t *testing.T) {
		r := e.do(t, "POST", "/v1/workspaces/alpha/restart", "")
		e.wantStatus(t, r, http.StatusConflict)
		b := r.errorBody(t)
		if b.Code != "busy" || b.State != "provisioning" || b.Generation == nil || *b.Generation != 1 ||
			b.Command != fsm.Restart || !strings.Contains(b.Message, "provisioning") {
			t.Fatalf("rejection body: %s", r.body)
		}
		if !slices.Equal(b.Allowed, []fsm.CommandType{fsm.Stop, fsm.Delete, fsm.Configure}) {
			t.Fatalf("allowed %v", b.Allowed)
		}
	})

	t.Run("CreateExistingIsConflict", func(t *testing.T) {
		r := e.do(t, "POST", "/v1/workspaces", `{"id":"alpha"}`)
		e.wantStatus(t, r, http.StatusConflict)
		if b := r.errorBody(t); b.Code != "exists" {
			t.Fatalf("body %s", r.body)
		}
	})

	t.Run("UnknownWorkspaceIs404", func(t *testing.T) {
		for _, path := range []string{"/v1/workspaces/nope/start", "/v1/workspaces/nope/stop", "/v1/workspaces/nope/restart"} {
			r := e.do(t, "POST", path, "")
			e.wantStatus(t, r, http.StatusNotFound)
			if b := r.errorBody(t); b.Code != "not_found" || b.State != "none" {
				t.Fatalf("%s: body %s", path, r.body)
			}
		}
		e.wantStatus(t, e.do(t, "DELETE", "/v1/workspaces/nope", ""), http.StatusNotFound)
		e.wantStatus(t, e.do(t, "GET", "/v1/workspaces/nope/events", ""), http.StatusNotFound)
		e.wantStatus(t, e.do(t, "GET", "/v1/workspaces/nope/wait?state=running", ""), http.StatusNotFound)
	})

	t.Run("IdempotencyKey", func(t *testing.T) {
		var first api.CommandResult
		for i := range 3 {
			r := e.do(t, "POST", "/v1/workspaces", `{"id":"beta"}`, api.IdempotencyHeader, "create-beta-1")
			e.wantStatus(t, r, http.StatusAccepted)
			var res api.CommandResult
			r.decode(t, &res)
			if i == 0 {
				first = res
			} else if res.CommandID != "create-beta-1" || res.EventSeq != first.EventSeq || res.Generation != 1 {
				t.Fatalf("repeat %d: %+v, first %+v", i, res, first)
			}
		}
		r := e.do(t, "GET", "/v1/workspaces/beta/events", "")
		e.wantStatus(t, r, http.StatusOK)
		var h struct{ Events []api.Event }
		r.decode(t, &h)
		if len(h.Events) != 1 {
			t.Fatalf("three requests with one key made %d events", len(h.Events))
		}
		// The same key for another request: 422, and nothing recorded.
		r = e.do(t, "POST", "/v1/workspaces", `{"id":"delta"}`, api.IdempotencyHeader, "create-beta-1")
		e.wantStatus(t, r, http.StatusUnprocessableEntity)
		var b api.ErrorBody
		r.decode(t, &b)
		if b.Code != api.CodeIDReused || b.Field != api.IdempotencyHeader || !strings.Contains(b.Message, "create beta") {
			t.Fatalf("reused key: %+v", b)
		}
		e.wantStatus(t, e.do(t, "GET", "/v1/workspaces/delta/events", ""), http.StatusNotFound)
	})

	t.Run("ConfigureAndNoop", func(t *testing.T) {
		e.report(t, "beta", fsm.ProvisionSucceeded, 1)
		r := e.do(t, "POST", "/v1/workspaces/beta/start", "")
		e.wantStatus(t, r, http.StatusOK)
		var res api.CommandResult
		r.decode(t, &res)
		if res.Outcome != fsm.Noop || res.State != "running" {
			t.Fatalf("start of a running workspace: %+v", res)
		}
		r = e.do(t, "PUT", "/v1/workspaces/beta/spec", `{"image":"agent:2","memory_bytes":67108864}`)
		e.wantStatus(t, r, http.StatusAccepted)
		r.decode(t, &res)
		if res.Command != fsm.Configure || res.State != "provisioning" || res.Generation != 2 {
			t.Fatalf("configure of a running workspace: %+v", res)
		}
	})

	t.Run("Delete", func(t *testing.T) {
		r := e.do(t, "DELETE", "/v1/workspaces/beta", "")
		e.wantStatus(t, r, http.StatusAccepted)
		r = e.do(t, "POST", "/v1/workspaces/beta/start", "")
		e.wantStatus(t, r, http.StatusConflict)
		if b := r.errorBody(t); b.Code != "gone" || b.State != "deleting" {
			t.Fatalf("start while deleting: %s", r.body)
		}
	})
}

func TestBadInput(t *testing.T) {
	e := newEnv(t, envOptions{noReadModel: true})
	e.create(t, "gamma")
	for _, tc := range []struct {
		name, method, path, body string
		headers                  []string
		field                    string
	}{
		{"BadID", "POST", "/v1/workspaces", `{"id":"Bad.ID"}`, nil, "id"},
		{"EmptyID", "POST", "/v1/workspaces", `{"id":""}`, nil, "id"},
		{"LongID", "POST", "/v1/workspaces", `{"id":"` + strings.Repeat("a", 64) + `"}`, nil, "id"},
		{"EmptyBody", "POST", "/v1/workspaces", ``, nil, "body"},
		{"NotJSON", "POST", "/v1/workspaces", `{"id":`, nil, "body"},
		{"TrailingData", "POST", "/v1/workspaces", `{"id":"x"} {}`, nil, "body"},
		{"UnknownField", "POST", "/v1/workspaces", `{"id":"x","colour":"red"}`, nil, "colour"},
		{"WrongType", "POST", "/v1/workspaces", `{"id":"x","spec":{"cpus":"two"}}`, nil, "spec.cpus"},
		{"NegativeCPUs", "POST", "/v1/workspaces", `{"id":"x","spec":{"cpus":-1}}`, nil, "spec.cpus"},
		{"TinyMemory", "PUT", "/v1/workspaces/gamma/spec", `{"memory_bytes":1}`, nil, "spec.memory_bytes"},
		{"ReservedLabel", "PUT", "/v1/workspaces/gamma/spec", `{"labels":{"turnstile.x":"y"}}`, nil, "spec.labels"},
		{"BadPathID", "POST", "/v1/workspaces/UPPER/start", ``, nil, "id"},
		{"BadIdempotencyKey", "POST", "/v1/workspaces/gamma/stop", ``, []string{api.IdempotencyHeader, "has space"}, api.IdempotencyHeader},
		// issue 12 item 3: the id of gamma's provision report is reserved.
		{"ReservedIdempotencyKey", "POST", "/v1/workspaces/gamma/stop", ``, []string{api.IdempotencyHeader, "sys-provision-gamma-g1"}, api.IdempotencyHeader},
		{"WaitBadState", "GET", "/v1/workspaces/gamma/wait?state=sleeping", ``, nil, "state"},
		{"WaitBadGeneration", "GET", "/v1/workspaces/gamma/wait?state=running&generation=x", ``, nil, "generation"},
		{"WaitBadTimeout", "GET", "/v1/workspaces/gamma/wait?state=running&timeout=soon", ``, nil, "timeout"},
		{"WaitTooLong", "GET", "/v1/workspaces/gamma/wait?state=running&timeout=24h", ``, nil, "timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := e.do(t, tc.method, tc.path, tc.body, tc.headers...)
			e.wantStatus(t, r, http.StatusBadRequest)
			b := r.errorBody(t)
			if b.Code != "invalid" || b.Field != tc.field || !strings.Contains(b.Message, tc.field) {
				t.Fatalf("want field %q named: %s", tc.field, r.body)
			}
			// A message that starts with its field's name gets no second
			// one in front ("spec.cpus: spec.cpus -1 …").
			if strings.HasPrefix(b.Message, tc.field+": "+tc.field) {
				t.Fatalf("field %q named twice: %q", tc.field, b.Message)
			}
		})
	}
	// The message as it comes, 0 meaning serve's --default-memory.
	r := e.do(t, "PUT", "/v1/workspaces/gamma/spec", `{"memory_bytes":100}`)
	e.wantStatus(t, r, http.StatusBadRequest)
	if b := r.errorBody(t); b.Message != "spec.memory_bytes 100 is out of range: 0 (serve's default) or at least 6291456" {
		t.Fatalf("tiny memory: %q", b.Message)
	}
	// Nothing of the above reached the stream: gamma has its one event.
	r = e.do(t, "GET", "/v1/workspaces/gamma/events", "")
	var h struct{ Events []api.Event }
	r.decode(t, &h)
	if len(h.Events) != 1 {
		t.Fatalf("gamma has %d events after refused requests", len(h.Events))
	}
}

func TestWait(t *testing.T) {
	e := newEnv(t, envOptions{noReadModel: true})
	e.create(t, "delta")

	t.Run("Reached", func(t *testing.T) {
		var wg sync.WaitGroup
		var r response
		var err error
		wg.Go(func() { r, err = e.try("GET", "/v1/workspaces/delta/wait?state=running&generation=1&timeout=20s", "") })
		e.report(t, "delta", fsm.ProvisionSucceeded, 1)
		wg.Wait()
		if err != nil {
			t.Fatal(err)
		}
		e.wantStatus(t, r, http.StatusOK)
		var w api.WaitResult
		r.decode(t, &w)
		if !w.Reached || w.State != "running" || w.Generation != 1 || w.EventSeq != 2 {
			t.Fatalf("wait: %+v", w)
		}
	})

	t.Run("AlreadyThere", func(t *testing.T) {
		r := e.do(t, "GET", "/v1/workspaces/delta/wait?state=running", "")
		e.wantStatus(t, r, http.StatusOK)
	})

	t.Run("Timeout", func(t *testing.T) {
		start := time.Now()
		r := e.do(t, "GET", "/v1/workspaces/delta/wait?state=stopped&timeout=0.3", "")
		e.wantStatus(t, r, http.StatusRequestTimeout)
		var w api.WaitResult
		r.decode(t, &w)
		if w.Reached || w.State != "running" || w.Want != "stopped" {
			t.Fatalf("timed-out wait: %+v", w)
		}
		if d := time.Since(start); d < 300*time.Millisecond {
			t.Fatalf("answered after %v, before the timeout", d)
		}
	})

	t.Run("LaterGenerationOnly", func(t *testing.T) {
		r := e.do(t, "GET", "/v1/workspaces/delta/wait?state=running&generation=2&timeout=200ms", "")
		e.wantStatus(t, r, http.StatusRequestTimeout)
	})
}

func TestReads(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.create(t, "eps")
	e.create(t, "zeta")
	e.report(t, "eps", fsm.ProvisionSucceeded, 1)

	t.Run("Get", func(t *testing.T) {
		var w api.Workspace
		testenv.Eventually(t, 10*time.Second, "the read model shows eps running", func() bool {
			r := e.do(t, "GET", "/v1/workspaces/eps", "")
			if r.status != http.StatusOK {
				return false
			}
			r.decode(t, &w)
			return w.Source == api.SourceReadModel && w.Status == "running"
		})
		if w.Generation != 1 || w.EventSeq != 2 || w.LatestEventSeq != 2 || w.StreamSeq == 0 || w.UpdatedAt == nil {
			t.Fatalf("get: %+v", w)
		}
	})

	t.Run("List", func(t *testing.T) {
		var l api.WorkspaceList
		testenv.Eventually(t, 10*time.Second, "the read model lists both", func() bool {
			e.do(t, "GET", "/v1/workspaces", "").decode(t, &l)
			return len(l.Workspaces) == 2
		})
		if l.Workspaces[0].ID != "eps" || l.Workspaces[1].ID != "zeta" || l.Checkpoint == 0 {
			t.Fatalf("list: %+v", l)
		}
		e.do(t, "GET", "/v1/workspaces?status=provisioning", "").decode(t, &l)
		if len(l.Workspaces) != 1 || l.Workspaces[0].ID != "zeta" {
			t.Fatalf("list ?status=provisioning: %+v", l)
		}
		e.do(t, "GET", "/v1/workspaces?limit=1", "").decode(t, &l)
		if len(l.Workspaces) != 1 || l.Next != "eps" {
			t.Fatalf("list ?limit=1: %+v", l)
		}
		r := e.do(t, "GET", "/v1/workspaces?status=sleeping", "")
		e.wantStatus(t, r, http.StatusBadRequest)
		if b := r.errorBody(t); b.Field != "status" {
			t.Fatalf("body %s", r.body)
		}
	})

	t.Run("GetUnknownIs404", func(t *testing.T) {
		r := e.do(t, "GET", "/v1/workspaces/nobody", "")
		e.wantStatus(t, r, http.StatusNotFound)
		if b := r.errorBody(t); b.Code != "not_found" {
			t.Fatalf("body %s", r.body)
		}
	})

	t.Run("Events", func(t *testing.T) {
		r := e.do(t, "GET", "/v1/workspaces/eps/events", "")
		e.wantStatus(t, r, http.StatusOK)
		var h struct {
			Workspace string
			Events    []api.Event
		}
		r.decode(t, &h)
		if len(h.Events) != 2 || h.Events[0].From != "none" || h.Events[0].To != "provisioning" ||
			h.Events[1].Type != fsm.Provisioned || h.Events[1].From != "provisioning" || h.Events[1].To != "running" ||
			h.Events[0].Actor != "api:"+testTokenName || h.Events[1].Actor != "test-provisioner" {
			t.Fatalf("events: %+v", h)
		}
	})

	t.Run("Metrics", func(t *testing.T) {
		r := e.do(t, "GET", "/metrics", "")
		e.wantStatus(t, r, http.StatusOK)
		for _, want := range []string{`turnstile_workspaces{state="running"} 1`, `turnstile_workspaces{state="provisioning"} 1`,
			`turnstile_workspaces{state="deleted"} 0`} {
			if !strings.Contains(string(r.body), want) {
				t.Fatalf("metrics lack %q:\n%s", want, r.body)
			}
		}
	})

	t.Run("Readyz", func(t *testing.T) {
		r := e.do(t, "GET", "/readyz", "")
		e.wantStatus(t, r, http.StatusOK)
		var rd api.Readiness
		r.decode(t, &rd)
		if !rd.Ready || rd.Provisioner != "sim" || !rd.Simulated || rd.Checks["nats"] != "ok" || rd.Checks["postgres"] != "ok" {
			t.Fatalf("readyz: %+v", rd)
		}
	})
}

func TestAuth(t *testing.T) {
	e := newEnv(t, envOptions{noReadModel: true})
	anon := &env{openapi: e.openapi, t: e.t, srv: e.srv}
	wrong := &env{openapi: e.openapi, t: e.t, srv: e.srv, token: "guess"}

	t.Run("NoTokenIs401", func(t *testing.T) {
		r := anon.do(t, "POST", "/v1/workspaces", `{"id":"theta"}`)
		e.wantStatus(t, r, http.StatusUnauthorized)
		if b := r.errorBody(t); b.Code != api.CodeUnauthorized || r.header.Get("WWW-Authenticate") == "" {
			t.Fatalf("401 body %s", r.body)
		}
		e.wantStatus(t, anon.do(t, "GET", "/metrics", ""), http.StatusUnauthorized)
	})
	t.Run("WrongTokenIs401", func(t *testing.T) {
		e.wantStatus(t, wrong.do(t, "POST", "/v1/workspaces", `{"id":"theta"}`), http.StatusUnauthorized)
	})
	t.Run("HealthWithoutToken", func(t *testing.T) {
		e.wantStatus(t, anon.do(t, "GET", "/healthz", ""), http.StatusOK)
		e.wantStatus(t, anon.do(t, "GET", "/readyz", ""), http.StatusOK)
	})
	t.Run("TokenIsAccepted", func(t *testing.T) {
		e.create(t, "theta")
	})
	// The refused requests published nothing.
	var h struct{ Events []api.Event }
	e.do(t, "GET", "/v1/workspaces/theta/events", "").decode(t, &h)
	if len(h.Events) != 1 {
		t.Fatalf("theta has %d events", len(h.Events))
	}
}

func TestStatusTable(t *testing.T) {
	for _, tc := range []struct {
		code   fsm.Code
		status int
	}{
		{fsm.CodeNotFound, http.StatusNotFound},
		{fsm.CodeExists, http.StatusConflict},
		{fsm.CodeBusy, http.StatusConflict},
		{fsm.CodeGone, http.StatusConflict},
		{fsm.CodeInvalid, http.StatusBadRequest},
	} {
		t.Run(string(tc.code), func(t *testing.T) {
			if got := api.StatusOf(tc.code); got != tc.status {
				t.Fatalf("StatusOf(%s) = %d, want %d", tc.code, got, tc.status)
			}
			if got := api.CodeOf(tc.status, api.ErrorBody{Code: string(tc.code)}); got != tc.code {
				t.Fatalf("CodeOf(%d, %s) = %s", tc.status, tc.code, got)
			}
		})
	}
	if got := api.CodeOf(http.StatusNotFound, api.ErrorBody{}); got != fsm.CodeNotFound {
		t.Fatalf("CodeOf(404, no body) = %q", got)
	}
	if got := api.CodeOf(http.StatusUnauthorized, api.ErrorBody{Code: api.CodeUnauthorized}); got != "" {
		t.Fatalf("CodeOf(401) = %q, want none", got)
	}
}

func TestParseTimeout(t *testing.T) {
	for in, want := range map[string]time.Duration{"30": 30 * time.Second, "1.5": 1500 * time.Millisecond, "2m": 2 * time.Minute, "250ms": 250 * time.Millisecond} {
		if got, err := api.ParseTimeout(in); err != nil || got != want {
			t.Errorf("ParseTimeout(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "soon", "-1", "-5s", "NaN", "nan", "+Inf", "-Inf", "1e10"} {
		if _, err := api.ParseTimeout(in); err == nil {
			t.Errorf("ParseTimeout(%q) accepted", in)
		}
	}
}
