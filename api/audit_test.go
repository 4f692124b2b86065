package api_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/turnstile-dev/turnstile/api"
	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/internal/testenv"
)

// TestAudit: GET /v1/workspaces/{id}/audit and GET /v1/audit replay the
// stream in serve and answer the report the CLI prints: OK on a clean
// history, the state at a point, and ok false naming an illegal event and
// an unreadable message slipped into the stream.
func TestAudit(t *testing.T) {
	e := newEnv(t, envOptions{noReadModel: true})

	e.wantStatus(t, e.do(t, "GET", "/v1/workspaces/Not_An_ID/audit", ""), http.StatusBadRequest)
	r := e.do(t, "GET", "/v1/workspaces/nobody/audit", "")
	e.wantStatus(t, r, http.StatusNotFound)
	if b := r.errorBody(t); b.Code != string(fsm.CodeNotFound) {
		t.Fatalf("unknown workspace: %s", r.body)
	}
	e.create(t, "clean")
	e.report(t, "clean", fsm.ProvisionSucceeded, 1)
	for _, q := range []string{"?at=yesterday", "?at=1&at=2", "?since=1"} {
		r := e.do(t, "GET", "/v1/workspaces/clean/audit"+q, "")
		e.wantStatus(t, r, http.StatusBadRequest)
		if b := r.errorBody(t); b.Code != string(fsm.CodeInvalid) || b.Field == "" {
			t.Fatalf("%s: %s", q, r.body)
		}
	}
	e.wantStatus(t, e.do(t, "GET", "/v1/audit?all=1", ""), http.StatusBadRequest)

	var rep api.AuditReport
	r = e.do(t, "GET", "/v1/workspaces/clean/audit?at=1", "")
	e.wantStatus(t, r, http.StatusOK)
	r.decode(t, &rep)
	if !rep.OK || rep.Events != 2 || len(rep.Violations) != 0 || rep.State == nil || rep.State.Status != fsm.Running ||
		rep.At == nil || rep.At.Status != fsm.Provisioning || !strings.HasPrefix(rep.AtLabel, "event 1 ") {
		t.Fatalf("clean audit: %s", r.body)
	}
	rep = api.AuditReport{}
	r = e.do(t, "GET", "/v1/audit", "")
	e.wantStatus(t, r, http.StatusOK)
	r.decode(t, &rep)
	if !rep.OK || rep.Workspaces != 1 || rep.Events != 2 || rep.Through == 0 {
		t.Fatalf("clean audit --all: %s", r.body)
	}

	// Tamper: a provisioned event for a generation that never was, and a
	// message no reader can decode.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	h, err := e.core.Store.Load(ctx, "clean")
	if err != nil || h.Last == nil {
		t.Fatal(h, err)
	}
	bad := *h.Last
	bad.ID, bad.CommandID, bad.Seq, bad.Type = "tampered", "tampered", bad.Seq+1, fsm.Provisioned
	bad.Generation = h.State.Generation + 5
	bad.State.Seq, bad.State.Generation = bad.Seq, bad.Generation
	data, err := events.Codec{}.Encode(bad)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range [][]byte{data, []byte(`{"garbage":true}`)} {
		m := nats.NewMsg(e.core.Store.Names().Event("clean"))
		m.Data = d
		if _, err := e.core.JS.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	check := func(r response, what string) {
		t.Helper()
		e.wantStatus(t, r, http.StatusOK)
		var rep api.AuditReport
		r.decode(t, &rep)
		if rep.OK || len(rep.Violations) != 2 || rep.Events != 3 ||
			!strings.Contains(rep.Violations[0].Problem, "illegal transition") || rep.Violations[0].Workspace != "clean" ||
			!strings.Contains(rep.Violations[1].Problem, "unreadable message on") || rep.Violations[1].Workspace != "clean" {
			t.Fatalf("%s after the tamper: %s", what, r.body)
		}
	}
	check(e.do(t, "GET", "/v1/workspaces/clean/audit", ""), "audit clean")
	check(e.do(t, "GET", "/v1/audit", ""), "audit --all")
}

// TestAuditAllTakesAWaitSlot: the whole-stream audit is a long read, so it
// counts against MaxWaits like a follow stream, and gives its slot back.
func TestAuditAllTakesAWaitSlot(t *testing.T) {
	e := newEnv(t, envOptions{noReadModel: true, configure: func(c *api.Config) { c.MaxWaits = 1 }})
	e.wantStatus(t, e.do(t, "GET", "/v1/audit", ""), http.StatusOK)
	e.wantStatus(t, e.do(t, "GET", "/v1/audit", ""), http.StatusOK) // the first gave its slot back

	// The follow stream's headers are written once it holds the slot.
	s := e.follow(t, e.srv.URL, "/v1/events?follow=1")
	defer s.close()
	// The streamed form too: the refusal comes before the replay starts,
	// so it keeps its status.
	for _, accept := range []string{"", api.NDJSON} {
		r := e.do(t, "GET", "/v1/audit", "", "Accept", accept)
		e.wantStatus(t, r, http.StatusTooManyRequests)
		// The message names what holds the slots, audits included.
		if b := r.errorBody(t); b.Code != api.CodeTooManyWaits || r.header.Get("Retry-After") == "" ||
			r.header.Get("Content-Type") != "application/json" || !strings.Contains(b.Message, "GET /v1/audit requests are open") {
			t.Fatalf("429 (Accept %q): %v %s", accept, r.header, r.body)
		}
	}
}

// TestAuditAllIsBounded: a whole-stream audit that outlasts MaxWait is
// answered 503 with a code and a way out, not left to the write deadline.
func TestAuditAllIsBounded(t *testing.T) {
	e := newEnv(t, envOptions{noReadModel: true, configure: func(c *api.Config) { c.MaxWait = time.Nanosecond }})
	r := e.do(t, "GET", "/v1/audit", "")
	e.wantStatus(t, r, http.StatusServiceUnavailable)
	if b := r.errorBody(t); b.Code != api.CodeUnavailable || !strings.Contains(b.Message, "did not finish in 1ns") {
		t.Fatalf("503: %s", r.body)
	}
}

// seed appends a created event for each of n new workspaces straight to
// the stream, each a copy of a real one under its own id: a legal history
// each, and n messages in far less time than n commands take.
func (e *env) seed(t *testing.T, n int) {
	t.Helper()
	e.create(t, "seed-model")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	h, err := e.core.Store.Load(ctx, "seed-model")
	if err != nil || h.Last == nil {
		t.Fatal(h, err)
	}
	acks := make([]jetstream.PubAckFuture, 0, n)
	for i := range n {
		env := *h.Last
		id := fmt.Sprintf("seed-%04d", i)
		env.ID, env.CommandID, env.Workspace, env.State.ID = id+"-event", id+"-command", id, id
		data, err := events.Codec{}.Encode(env)
		if err != nil {
			t.Fatal(err)
		}
		m := nats.NewMsg(e.core.Store.Names().Event(id))
		m.Data = data
		f, err := e.core.JS.PublishMsgAsync(m)
		if err != nil {
			t.Fatal(err)
		}
		acks = append(acks, f)
	}
	testenv.AwaitAcks(t, ctx, acks)
}

// auditLines reads an application/x-ndjson answer of GET /v1/audit: one
// AuditLine a line, each ended by a newline, no field it does not know.
func auditLines(t *testing.T, r response) []api.AuditLine {
	t.Helper()
	if ct := r.header.Get("Content-Type"); ct != api.NDJSON {
		t.Fatalf("Content-Type %q, want %s: %s", ct, api.NDJSON, r.body)
	}
	var lines []api.AuditLine
	for b := range bytes.Lines(r.body) {
		if !bytes.HasSuffix(b, []byte("\n")) {
			t.Fatalf("line %d has no newline at its end: %s", len(lines)+1, b)
		}
		var l api.AuditLine
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&l); err != nil {
			t.Fatalf("line %d: %v: %s", len(lines)+1, err, b)
		}
		lines = append(lines, l)
	}
	if len(lines) == 0 {
		t.Fatal("an ndjson answer without a line")
	}
	return lines
}

// TestAuditAllStream: with Accept: application/x-ndjson, GET /v1/audit
// answers progress lines while it replays, then the report as the last
// line, the same report as the plain answer's; any other Accept keeps the
// plain answer.
func TestAuditAllStream(t *testing.T) {
	// Every progress call makes a line: the replay's steps all show.
	e := newEnv(t, envOptions{noReadModel: true, configure: func(c *api.Config) { c.ProgressInterval = time.Nanosecond }})
	e.seed(t, 600)

	r := e.do(t, "GET", "/v1/audit", "", "Accept", api.NDJSON)
	e.wantStatus(t, r, http.StatusOK)
	lines := auditLines(t, r)
	rep := lines[len(lines)-1].Report
	if rep == nil || !rep.OK || rep.Workspaces != 601 || rep.Events != 601 {
		t.Fatalf("the last line is not the report of 601 workspaces: %s", r.body)
	}
	var seq uint64
	between := false // a line of the replay under way, neither first nor last
	for i, l := range lines[:len(lines)-1] {
		p := l.Progress
		if p == nil || l.Report != nil || l.Error != nil {
			t.Fatalf("line %d before the last is not progress alone: %s", i+1, r.body)
		}
		if p.Last != rep.Through || p.Seq < seq || p.Seq > p.Last {
			t.Fatalf("line %d: progress %+v after seq %d, through %d", i+1, *p, seq, rep.Through)
		}
		seq = p.Seq
		between = between || (p.Seq > 0 && p.Seq < p.Last)
	}
	if lines[0].Progress.Seq != 0 || seq != rep.Through || !between {
		t.Fatalf("progress should go from 0 through %d with steps between: %s", rep.Through, r.body)
	}

	for _, accept := range []string{"", "application/json", "*/*", api.NDJSON + ";q=0", api.NDJSON + ";q=NaN", "text/event-stream"} {
		r := e.do(t, "GET", "/v1/audit", "", "Accept", accept)
		e.wantStatus(t, r, http.StatusOK)
		var plain api.AuditReport
		r.decode(t, &plain)
		if ct := r.header.Get("Content-Type"); ct != "application/json" || !reflect.DeepEqual(plain, *rep) {
			t.Fatalf("Accept %q: %s %s, want the streamed report %+v", accept, ct, r.body, *rep)
		}
	}
	r = e.do(t, "GET", "/v1/audit", "", "Accept", "application/json;q=0.5, "+strings.ToUpper(api.NDJSON)+";q=0.9")
	if l := auditLines(t, r); l[len(l)-1].Report == nil {
		t.Fatalf("ndjson among other types: %s", r.body)
	}
}

// TestAuditAllStreamThrottled: progress lines are ProgressInterval apart;
// within one interval only the first and the last go.
func TestAuditAllStreamThrottled(t *testing.T) {
	e := newEnv(t, envOptions{noReadModel: true, configure: func(c *api.Config) { c.ProgressInterval = time.Hour }})
	e.seed(t, 600)
	r := e.do(t, "GET", "/v1/audit", "", "Accept", api.NDJSON)
	e.wantStatus(t, r, http.StatusOK)
	lines := auditLines(t, r)
	if len(lines) != 3 || lines[0].Progress == nil || lines[0].Progress.Seq != 0 || lines[1].Progress == nil ||
		lines[1].Progress.Seq != lines[1].Progress.Last || lines[2].Report == nil {
		t.Fatalf("want the first progress, the last, the report: %s", r.body)
	}
}

// TestAuditAllStreamLive: each progress line reaches the client while the
// audit runs, not with the report at the end. The report's write is held
// back until the client has read the first progress line; an answer
// buffered until the handler returns (a line written without its flush)
// never gets that far.
func TestAuditAllStreamLive(t *testing.T) {
	// Two progress lines and the report: far less than a write buffer.
	e := newEnv(t, envOptions{noReadModel: true, configure: func(c *api.Config) { c.ProgressInterval = time.Hour }})
	e.seed(t, 50)
	read := make(chan struct{}) // closed when the client has read a progress line
	var held atomic.Bool        // the report waited for it
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.api.Handler().ServeHTTP(&holdReport{ResponseWriter: w, read: read, held: &held}, r)
	}))
	t.Cleanup(srv.Close)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", srv.URL+"/v1/audit", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+e.token)
	req.Header.Set("Accept", api.NDJSON)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	lines := bufio.NewScanner(res.Body)
	first := make(chan []byte, 1)
	go func() {
		if lines.Scan() {
			first <- bytes.Clone(lines.Bytes())
		}
		close(first)
	}()
	select {
	case b := <-first:
		var l api.AuditLine
		if err := json.Unmarshal(b, &l); err != nil || l.Progress == nil || l.Report != nil {
			t.Fatalf("the first line is not progress: %q (%v)", b, err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no progress line reached the client while the report was held back")
	}
	close(read)
	<-first // closed after the first line: the scanner is this goroutine's now
	var last []byte
	for lines.Scan() {
		last = bytes.Clone(lines.Bytes())
	}
	var l api.AuditLine
	if err := json.Unmarshal(last, &l); err != nil || l.Report == nil || !l.Report.OK || !held.Load() {
		t.Fatalf("the last line %q (%v) is not an OK report written after the progress was read (held %v)", last, err, held.Load())
	}
}

// holdReport passes an answer through but holds back the write that
// carries the audit's report until read is closed (or 15 s have passed,
// when the test has failed already).
type holdReport struct {
	http.ResponseWriter
	read <-chan struct{}
	held *atomic.Bool
}

func (h *holdReport) Write(p []byte) (int, error) {
	if bytes.Contains(p, []byte(`"report"`)) {
		select {
		case <-h.read:
			h.held.Store(true)
		case <-time.After(15 * time.Second):
		}
	}
	return h.ResponseWriter.Write(p)
}

// Unwrap lets http.ResponseController flush the answer underneath.
func (h *holdReport) Unwrap() http.ResponseWriter { return h.ResponseWriter }

// TestAuditAllStreamError: a streamed audit that fails ends with an error
// line carrying the plain answer's body and status; refusals before the
// replay starts stay plain error answers.
func TestAuditAllStreamError(t *testing.T) {
	e := newEnv(t, envOptions{noReadModel: true, configure: func(c *api.Config) { c.MaxWait = time.Nanosecond }})
	plain := e.do(t, "GET", "/v1/audit", "")
	e.wantStatus(t, plain, http.StatusServiceUnavailable)
	want := plain.errorBody(t)

	r := e.do(t, "GET", "/v1/audit", "", "Accept", api.NDJSON)
	e.wantStatus(t, r, http.StatusOK)
	lines := auditLines(t, r)
	if len(lines) != 1 || lines[0].Error == nil || lines[0].Report != nil || lines[0].Status != http.StatusServiceUnavailable ||
		!reflect.DeepEqual(*lines[0].Error, want) || !strings.Contains(want.Message, "did not finish in 1ns") {
		t.Fatalf("want one error line as %s with status 503: %s", plain.body, r.body)
	}

	// The metrics count the streamed failure as the 503 it is, not the
	// 200 that went out before it.
	mfs, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var failed float64
	for _, mf := range mfs {
		if mf.GetName() != "turnstile_http_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["route"] == "GET /v1/audit" {
				if labels["code"] != "503" {
					t.Errorf("GET /v1/audit counted with code %s", labels["code"])
				}
				failed += m.GetCounter().GetValue()
			}
		}
	}
	if failed != 2 {
		t.Errorf("GET /v1/audit counted %v times as 503, want 2 (plain and streamed)", failed)
	}

	r = e.do(t, "GET", "/v1/audit?all=1", "", "Accept", api.NDJSON)
	e.wantStatus(t, r, http.StatusBadRequest)
	if b := r.errorBody(t); b.Code != string(fsm.CodeInvalid) || r.header.Get("Content-Type") != "application/json" {
		t.Fatalf("a bad parameter: %v %s", r.header, r.body)
	}
}
