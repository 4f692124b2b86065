package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/turnstile-dev/turnstile/api"
	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/internal/testenv"
	"github.com/turnstile-dev/turnstile/migrations"
	"github.com/turnstile-dev/turnstile/ui"
)

// The fuzz targets below drive the real handler (routing, authorization,
// decoding, validation, the engine over embedded NATS, the read model on
// PostgreSQL) with arbitrary methods, request targets, bodies and headers,
// and check every answer:
//
//   - the handler never panics;
//   - every answer is one JSON object with Content-Type application/json,
//     except ServeMux's redirect of a non-canonical path (3xx, no effect),
//     the timeline page's files (package ui, with its CSP), and GET
//     /v1/audit's application/x-ndjson form, whose lines are AuditLines
//     ending in a report or an error (an error line of a 5xx status counts
//     as a 5xx);
//   - no answer is a 5xx: the server is healthy, so a 5xx can only be bad
//     input the handler failed to recognise (one whose server log blames a
//     timeout inside the server is sent once more, and fails if it 5xx's
//     again);
//   - an error body has a code and a message, and the code agrees with the
//     status (400 invalid with the field named, 401 unauthorized, 403
//     cross_origin, 404 not_found or no_route, 409 exists, busy or gone,
//     415 unsupported_media_type);
//   - a refused request (400, 401, 403, 415, no route, redirect) appended nothing to
//     either stream, a read appended nothing, and only a 202 appended an
//     event.

// fuzzToken is the bearer token of the fuzzed server; requests carry it
// unless the fuzzed headers set Authorization themselves.
const fuzzToken = "fuzz-token-0123456789abcdefghijklmnopqrstuvwxyz"

// fuzzServer is one API server with its core and read model, shared by
// every input of a fuzz target.
type fuzzServer struct {
	handler  http.Handler
	log      *logBuffer // the server's log of the current input
	core     *testenv.Core
	commands jetstream.Stream
	events   jetstream.Stream
	names    events.Names
}

// newFuzzServer starts NATS, the streams and an engine, a migrated read
// model without a projector (reads of a workspace fall back to the stream),
// and the API with short waits, and seeds two workspaces: alpha
// provisioning, beta running.
func newFuzzServer(tb testing.TB) *fuzzServer {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	core := testenv.StartCore(tb, testenv.CoreOptions{})
	pool, err := pgxpool.New(ctx, pg.NewDatabase(tb))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(pool.Close)
	db := stdlib.OpenDBFromPool(pool)
	defer db.Close()
	if err := migrations.Up(ctx, db); err != nil {
		tb.Fatal(err)
	}
	log := &logBuffer{}
	s, err := api.New(api.Config{Client: core.APIClient(tb), Store: core.Store, NC: core.NC, Pool: pool,
		Logger: slog.New(slog.NewTextHandler(log, &slog.HandlerOptions{Level: slog.LevelWarn})),
		Tokens: []api.Token{{Name: "fuzz", Secret: fuzzToken}}, Provisioner: "sim", CommandTimeout: 20 * time.Second,
		DefaultWait: 10 * time.Millisecond, MaxWait: 50 * time.Millisecond, PollInterval: 10 * time.Millisecond})
	if err != nil {
		tb.Fatal(err)
	}
	fs := &fuzzServer{handler: s.Handler(), log: log, core: core, names: events.NewNames("")}
	if fs.commands, err = core.JS.Stream(ctx, fs.names.CommandStream()); err != nil {
		tb.Fatal(err)
	}
	if fs.events, err = core.JS.Stream(ctx, fs.names.EventStream()); err != nil {
		tb.Fatal(err)
	}
	for _, id := range []string{"alpha", "beta"} {
		o, err := core.Client(tb, "fuzz-setup").Send(ctx, fsm.Command{ID: "setup-" + id, Type: fsm.Create, Workspace: id})
		if err != nil || o.Outcome != fsm.Accepted {
			tb.Fatalf("create %s: %+v %v", id, o, err)
		}
	}
	o, err := core.SystemClient(tb, "fuzz-provisioner").Send(ctx, fsm.Command{ID: "sys-setup-beta-up", Type: fsm.ProvisionSucceeded, Workspace: "beta", Generation: 1})
	if err != nil || o.Outcome != fsm.Accepted {
		tb.Fatalf("provision beta: %+v %v", o, err)
	}
	return fs
}

// logBuffer keeps the server's log lines of one input.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *logBuffer) reset() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf.Reset()
}

// overloaded matches the logged errors of a server that ran out of time
// rather than met bad input.
var overloaded = regexp.MustCompile(`context deadline exceeded|nats: timeout|i/o timeout`)

// streamsState is where the two streams stand.
type streamsState struct {
	commands, events uint64 // last sequences
	lastEvent        uint64 // stream sequence of the newest event (not outcome)
}

func (fs *fuzzServer) state(t *testing.T) streamsState {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var st streamsState
	ci, err := fs.commands.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ei, err := fs.events.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	st.commands, st.events = ci.State.LastSeq, ei.State.LastSeq
	msg, err := fs.events.GetLastMsgForSubject(ctx, fs.names.Events())
	switch {
	case err == nil:
		st.lastEvent = msg.Sequence
	case !errors.Is(err, jetstream.ErrMsgNotFound):
		t.Fatal(err)
	}
	return st
}

// fuzzRequest builds the request a server would hand the handler, or
// reports false for input net/http itself refuses before any handler runs
// (a method that is not a token, a target that is not an absolute path).
func fuzzRequest(method, target string, body []byte, headers string) (*http.Request, bool) {
	if method == "" {
		method = http.MethodGet
	}
	if !isToken(method) || !strings.HasPrefix(target, "/") {
		return nil, false
	}
	u, err := url.ParseRequestURI(target)
	if err != nil {
		return nil, false
	}
	h := http.Header{}
	for line := range strings.SplitSeq(headers, "\n") {
		k, v, ok := strings.Cut(line, ":")
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if !ok || !isToken(k) || strings.ContainsAny(v, "\r\n\x00") {
			continue
		}
		h.Add(k, v)
	}
	if h.Get("Authorization") == "" {
		h.Set("Authorization", "Bearer "+fuzzToken)
	}
	if h.Get("Content-Type") == "" && len(body) > 0 {
		h.Set("Content-Type", "application/json")
	}
	r := &http.Request{Method: method, URL: u, RequestURI: target, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: h, Host: "turnstile.test", RemoteAddr: "192.0.2.1:1234",
		Body: io.NopCloser(bytes.NewReader(body)), ContentLength: int64(len(body))}
	return r, true
}

// isToken reports whether s is an RFC 9110 token (a method or header name).
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}

// serve sends one fuzzed request and checks the answer and the streams.
// A server error the server's log blames on a timeout inside it (NATS or
// PostgreSQL slower than their deadlines on a saturated machine) is sent
// once more: a handler that hangs on the input fails the second time too.
func (fs *fuzzServer) serve(t *testing.T, method, target string, body []byte, headers string) {
	for attempt := 0; ; attempt++ {
		if !fs.serveOnce(t, method, target, body, headers, attempt > 0) {
			return
		}
	}
}

// serveOnce is serve's one request; it reports whether to send it again.
func (fs *fuzzServer) serveOnce(t *testing.T, method, target string, body []byte, headers string, again bool) bool {
	r, ok := fuzzRequest(method, target, body, headers)
	if !ok {
		return false
	}
	timeout := 30 * time.Second
	if r.URL.Query().Has("follow") {
		timeout = time.Second // a follow stream lasts as long as its request
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	r = r.WithContext(ctx)
	before := fs.state(t)
	fs.log.reset()
	rec := httptest.NewRecorder()
	fs.handler.ServeHTTP(rec, r)
	after := fs.state(t)
	status, got := rec.Code, rec.Body.Bytes()
	desc := func() string { return r.Method + " " + target + " → " + http.StatusText(status) + ": " + string(got) }

	if status == http.StatusMovedPermanently || status == http.StatusTemporaryRedirect || status == http.StatusPermanentRedirect {
		// ServeMux redirects a path that is not clean ("//", "/./",
		// "/../") to the clean one (307 keeps the method); nothing ran.
		if loc := rec.Header().Get("Location"); loc == "" {
			t.Fatalf("redirect without a Location: %s", desc())
		}
		fs.unchanged(t, before, after, desc)
		return false
	}
	if rec.Header().Get("Content-Type") == api.NDJSON && status == http.StatusOK && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
		// GET /v1/audit's streamed form: its error, if any, is its last
		// line, with the status the plain answer would have had.
		if status = ndjsonStatus(t, got, desc); status < 500 {
			fs.unchanged(t, before, after, desc) // an audit only reads
			return false
		}
	}
	if status == http.StatusServiceUnavailable && r.URL.Path == "/v1/audit" && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
		// An audit that outlives MaxWait (50 ms here, on a loaded host
		// too) is answered 503 with that said: the documented answer, not
		// a server error; it only read.
		var b api.ErrorBody
		if _ = json.Unmarshal(got, &b); b.Code == "" { // the streamed form: its last line
			var last struct{ Error api.ErrorBody }
			lines := bytes.Split(bytes.TrimSpace(got), []byte("\n"))
			_ = json.Unmarshal(lines[len(lines)-1], &last)
			b = last.Error
		}
		if b.Code == api.CodeUnavailable && strings.Contains(b.Message, "did not finish in") {
			fs.unchanged(t, before, after, desc)
			return false
		}
	}
	if status >= 500 {
		logged := fs.log.String()
		if overloaded.MatchString(logged) && !again {
			t.Logf("the server timed out; sending the input again: %s\nserver log: %s", desc(), logged)
			return true
		}
		t.Fatalf("client input answered with a server error: %s\nserver log: %s", desc(), logged)
	}
	if rec.Header().Get("Content-Type") == "text/event-stream" && status == http.StatusOK && r.Method == http.MethodGet {
		fs.unchanged(t, before, after, desc) // a follow stream (issue 14 item 1) only reads
		return false
	}
	if ui.Public(r.URL.Path) && rec.Header().Get("Content-Security-Policy") == ui.CSP {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			t.Fatalf("the page answered a %s: %s", r.Method, desc())
		}
		fs.unchanged(t, before, after, desc) // the timeline page's files (or their 404) only read
		return false
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q: %s", ct, desc())
	}
	if !json.Valid(got) || !bytes.HasPrefix(bytes.TrimSpace(got), []byte("{")) {
		t.Fatalf("the body is not one JSON object: %s", desc())
	}
	isRead := r.Method == http.MethodGet || r.Method == http.MethodHead
	switch {
	case status == http.StatusOK || status == http.StatusAccepted:
		if isRead {
			fs.unchanged(t, before, after, desc)
			return false
		}
		var res api.CommandResult
		strictDecode(t, got, &res, desc)
		if res.CommandID == "" || fsm.ValidateID(res.Workspace) != nil {
			t.Fatalf("a command result without a command id or a valid workspace: %s", desc())
		}
		switch {
		case status == http.StatusAccepted && res.Outcome == fsm.Accepted:
			if after.lastEvent <= before.lastEvent && r.Header.Get(api.IdempotencyHeader) == "" {
				t.Fatalf("accepted, but no event was appended: %s", desc())
			}
		case status == http.StatusOK && (res.Outcome == fsm.Noop || res.Outcome == fsm.Stale):
			if after.lastEvent != before.lastEvent {
				t.Fatalf("a %s outcome appended an event: %s", res.Outcome, desc())
			}
		default:
			t.Fatalf("status and outcome disagree: %s", desc())
		}
	case status == http.StatusRequestTimeout:
		var w api.WaitResult
		strictDecode(t, got, &w, desc)
		if w.Reached || !isRead {
			t.Fatalf("a 408 that is not an unfinished wait: %s", desc())
		}
		fs.unchanged(t, before, after, desc)
	case status >= 400 && status < 500:
		var b api.ErrorBody
		strictDecode(t, got, &b, desc)
		if b.Code == "" || b.Message == "" {
			t.Fatalf("an error without a code or a message: %s", desc())
		}
		refused := true // nothing may have been published
		switch status {
		case http.StatusBadRequest:
			if b.Code != string(fsm.CodeInvalid) {
				t.Fatalf("a 400 with code %q: %s", b.Code, desc())
			}
			if b.Field == "" || !strings.Contains(b.Message, b.Field) {
				t.Fatalf("a 400 that does not name the field: %s", desc())
			}
		case http.StatusUnauthorized:
			if b.Code != api.CodeUnauthorized {
				t.Fatalf("a 401 with code %q: %s", b.Code, desc())
			}
		case http.StatusForbidden:
			if b.Code != api.CodeCrossOrigin || isRead {
				t.Fatalf("a 403 that is not a cross-origin write: %s", desc())
			}
		case http.StatusUnsupportedMediaType:
			if b.Code != api.CodeUnsupportedMediaType || isRead {
				t.Fatalf("a 415 that is not a write of another content type: %s", desc())
			}
		case http.StatusNotFound:
			switch b.Code {
			case "no_route":
			case string(fsm.CodeNotFound):
				refused = isRead // a refused command is recorded, with its outcome
			default:
				t.Fatalf("a 404 with code %q: %s", b.Code, desc())
			}
		case http.StatusMethodNotAllowed:
			if b.Code != api.CodeMethodNotAllowed || rec.Header().Get("Allow") == "" {
				t.Fatalf("a 405 without its code or Allow: %s", desc())
			}
		case http.StatusConflict:
			switch fsm.Code(b.Code) {
			case fsm.CodeExists, fsm.CodeBusy, fsm.CodeGone:
			default:
				t.Fatalf("a 409 with code %q: %s", b.Code, desc())
			}
			if isRead {
				t.Fatalf("a read answered 409: %s", desc())
			}
			refused = false
		case http.StatusUnprocessableEntity:
			// An Idempotency-Key used before by another request: the
			// stream dedupes the publish, so nothing moves.
			if b.Code != api.CodeIDReused || b.Field != api.IdempotencyHeader || isRead {
				t.Fatalf("a 422 that is not a reused key: %s", desc())
			}
		default:
			t.Fatalf("unexpected status: %s", desc())
		}
		if refused {
			fs.unchanged(t, before, after, desc)
		} else if after.lastEvent != before.lastEvent {
			t.Fatalf("a rejected command appended an event: %s", desc())
		}
	default:
		t.Fatalf("unexpected status: %s", desc())
	}
	return false
}

// unchanged fails unless both streams are where they were.
func (fs *fuzzServer) unchanged(t *testing.T, before, after streamsState, desc func() string) {
	t.Helper()
	if before != after {
		t.Fatalf("the streams moved from %+v to %+v: %s", before, after, desc())
	}
}

// ndjsonStatus checks an application/x-ndjson answer of GET /v1/audit:
// every line one AuditLine with one field set, progress lines only before
// the last, the last the report or an error. It returns the error's
// status, or 200 for a report.
func ndjsonStatus(t *testing.T, got []byte, desc func() string) int {
	t.Helper()
	var last api.AuditLine
	n := 0
	for line := range bytes.Lines(got) {
		if n > 0 && last.Progress == nil {
			t.Fatalf("a line after the final one: %s", desc())
		}
		last = api.AuditLine{}
		strictDecode(t, line, &last, desc)
		set := 0
		for _, ok := range []bool{last.Progress != nil, last.Report != nil, last.Error != nil} {
			if ok {
				set++
			}
		}
		if set != 1 || (last.Error != nil) != (last.Status != 0) {
			t.Fatalf("a line that is not one of progress, report, error: %s", desc())
		}
		n++
	}
	switch {
	case last.Report != nil:
		return http.StatusOK
	case last.Error != nil && last.Error.Code != "" && last.Error.Message != "":
		return last.Status
	}
	t.Fatalf("an ndjson answer without a final report or error: %s", desc())
	return 0
}

// strictDecode decodes one JSON document into v, refusing fields v lacks.
func strictDecode(t *testing.T, data []byte, v any, desc func() string) {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("the body is not a %T (%v): %s", v, err, desc())
	}
}

// FuzzCommandRoutes fuzzes the routes that submit commands: create, start,
// stop, restart, delete and configure.
func FuzzCommandRoutes(f *testing.F) {
	for _, s := range []struct{ method, target, body, headers string }{
		{"POST", "/v1/workspaces", `{"id":"fz-a"}`, ""},
		{"POST", "/v1/workspaces", `{"id":"fz-b","spec":{"image":"agent:1","env":{"A":"1"},"cpus":0.5,"memory_bytes":67108864,"labels":{"team":"x"}}}`, ""},
		{"POST", "/v1/workspaces", `{"id":"fz-c"}`, api.IdempotencyHeader + ": create-fz-c"},
		{"POST", "/v1/workspaces/alpha/start", ``, ""},
		{"POST", "/v1/workspaces/beta/start", ``, ""},
		{"POST", "/v1/workspaces/alpha/stop", ``, api.IdempotencyHeader + ": stop-alpha-1"},
		{"POST", "/v1/workspaces/beta/restart", ``, ""},
		{"DELETE", "/v1/workspaces/ghost", ``, ""},
		{"PUT", "/v1/workspaces/beta/spec", `{"image":"agent:2","memory_bytes":67108864}`, ""},
		{"PUT", "/v1/workspaces/alpha/spec", `{"memory_bytes":1}`, ""},
		{"PUT", "/v1/workspaces/alpha/spec", `null`, ""},
		{"PUT", "/v1/workspaces/alpha/spec", `{"labels":{"turnstile.x":"y"}}`, ""},
		{"POST", "/v1/workspaces", `{"id":"Bad.ID"}`, ""},
		{"POST", "/v1/workspaces", `{"id":"x","colour":"red"}`, ""},
		{"POST", "/v1/workspaces", `{"id":"x"} {}`, ""},
		{"POST", "/v1/workspaces", `{"id":"x","spec":{"cpus":1e400}}`, ""},
		{"POST", "/v1/workspaces", `{"id":"x","spec":{"cpus":"two"}}`, ""},
		{"POST", "/v1/workspaces", "\xef\xbb\xbf{\"id\":\"x\"}", ""},
		{"POST", "/v1/workspaces", `{"id":"x"}`, "Authorization: Bearer wrong"},
		{"POST", "/v1/workspaces", ``, ""},
		{"POST", "/v1/workspaces", `[]`, ""},
		{"POST", "/v1/workspaces", `{"id":7}`, ""},
		{"PUT", "/v1/workspaces/alpha/spec", `"image"`, ""},
		{"PUT", "/v1/workspaces/alpha/spec", `{"env":{"A":1}}`, ""},
		{"POST", "/v1/workspaces/UPPER/start", ``, ""},
		{"POST", "/v1/workspaces/alpha/stop", ``, api.IdempotencyHeader + ": has space"},
		{"POST", "/v1/workspaces/a%2Fb/start", ``, ""},
		{"POST", "/v1//workspaces/alpha/stop", ``, ""},
		{"POST", "/v1/workspaces/alpha/../beta/stop", ``, ""},
		{"PATCH", "/v1/workspaces", `{"id":"x"}`, ""},
		{"POST", "/v1/workspaces/alpha/start?force=1", ``, ""},
		{"POST", "/v1/workspaces", `{"id":"fz-d"}`, "Content-Type: text/plain"},
		{"POST", "/v1/workspaces/beta/stop", ``, "Content-Type: application/x-www-form-urlencoded"},
		{"PUT", "/v1/workspaces/beta/spec", `{"image":"agent:3"}`, "Content-Type: application/json; charset=utf-8"},
		{"POST", "/v1/workspaces", `{"id":"fz-e"}`, "Origin: https://attacker.example"},
		{"DELETE", "/v1/workspaces/beta", ``, "Sec-Fetch-Site: cross-site"},
	} {
		f.Add(s.method, s.target, []byte(s.body), s.headers)
	}
	fs := newFuzzServer(f)
	f.Fuzz(func(t *testing.T, method, target string, body []byte, headers string) {
		fs.serve(t, method, target, body, headers)
	})
}

// FuzzReadRoutes fuzzes the routes that read: get, list, events, wait and
// the health checks.
func FuzzReadRoutes(f *testing.F) {
	for _, s := range []struct{ target, headers string }{
		{"/v1/workspaces", ""},
		{"/v1/workspaces?status=running&limit=1", ""},
		{"/v1/workspaces?status=sleeping", ""},
		{"/v1/workspaces?limit=0", ""},
		{"/v1/workspaces?limit=99999999999999999999", ""},
		{"/v1/workspaces?after=alpha&limit=1000", ""},
		{"/v1/workspaces?after=%27%3B--", ""},
		{"/v1/workspaces?after=a%00b", ""},
		{"/v1/workspaces?after=%FF", ""},
		{"/v1/workspaces?status=%00", ""},
		{"/v1/workspaces/alpha", ""},
		{"/v1/workspaces/nobody", ""},
		{"/v1/workspaces/Bad.ID", ""},
		{"/v1/workspaces/beta/events", ""},
		{"/v1/workspaces/nobody/events", ""},
		{"/v1/workspaces/beta/wait?state=running", ""},
		{"/v1/workspaces/alpha/wait?state=running&timeout=0.01", ""},
		{"/v1/workspaces/beta/wait?state=running&generation=2&timeout=20ms", ""},
		{"/v1/workspaces/beta/wait?state=none", ""},
		{"/v1/workspaces/beta/wait?state=running&generation=-1", ""},
		{"/v1/workspaces/beta/wait?state=running&timeout=NaN", ""},
		{"/v1/workspaces/beta/wait?state=running&timeout=1e300", ""},
		{"/v1/workspaces/beta/wait?state=running&timeout=-0", ""},
		{"/v1/workspaces/beta/events", "Authorization: Bearer nope"},
		{"/healthz", "Authorization: none"},
		{"/readyz", ""},
		{"/metrics", ""},
		{"/v1/workspaces/beta/events/extra", ""},
		{"/v1/workspaces/beta/events?limit=1&after=1", ""},
		{"/v1/workspaces/beta/events?since=x", ""},
		{"/v1/events?limit=2", ""},
		{"/v1/workspaces/beta/events?follow=1", ""},
		{"/v1/workspaces/beta/explain", ""},
		{"/v1/workspaces/beta/audit", ""},
		{"/v1/workspaces/beta/audit?at=2026-01-02T15:04:05Z", ""},
		{"/v1/workspaces/nobody/audit?at=x", ""},
		{"/v1/audit", ""},
		{"/v1/audit", "Accept: " + api.NDJSON},
		{"/v1/audit", "Accept: application/json, " + api.NDJSON + ";q=0"},
		{"/v1/workspaces/beta?watch=true", ""},
		{"/v1/workspaces/beta/outcomes", ""},
		{"/v1/workspaces/beta/outcomes?limit=1&after=x", ""},
		{"/", "Authorization: none"},
		{"/ui/app.js", ""},
		{"/ui/nothing.js", ""},
		{"/ui/../v1/workspaces", "Authorization: none"},
		{"/ui/", ""},
	} {
		f.Add("GET", s.target, []byte(nil), s.headers)
	}
	fs := newFuzzServer(f)
	f.Fuzz(func(t *testing.T, method, target string, body []byte, headers string) {
		fs.serve(t, method, target, body, headers)
	})
}
