package api_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/turnstile-dev/turnstile/api"
	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/fsm"
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
	r := e.do(t, "GET", "/v1/audit", "")
	e.wantStatus(t, r, http.StatusTooManyRequests)
	if b := r.errorBody(t); b.Code != api.CodeTooManyWaits || r.header.Get("Retry-After") == "" {
		t.Fatalf("429: %v %s", r.header, r.body)
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
