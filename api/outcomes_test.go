package api_test

import (
	"context"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/turnstile-dev/turnstile/api"
	"github.com/turnstile-dev/turnstile/fsm"
)

// A workspace's outcomes list what its events cannot: a refused command
// with its code and a stale report, besides the accepted ones, and only
// its own, paged and followed by stream sequence.
func TestWorkspaceOutcomes(t *testing.T) {
	e := newEnv(t, envOptions{noReadModel: true})
	e.create(t, "oc")
	e.create(t, "other")
	r := e.do(t, "POST", "/v1/workspaces/oc/restart", "")
	e.wantStatus(t, r, http.StatusConflict)
	e.report(t, "oc", fsm.ProvisionSucceeded, 1)
	e.command(t, "oc", "restart") // generation 2
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	o, err := e.system.Send(ctx, fsm.Command{Type: fsm.ContainerExited, Workspace: "oc", Generation: 1, Reason: "test"})
	if err != nil || o.Outcome != fsm.Stale {
		t.Fatalf("a report on generation 1 after the restart: %+v %v", o, err)
	}

	var page api.OutcomePage
	e.do(t, "GET", "/v1/workspaces/oc/outcomes", "").decode(t, &page)
	type row struct {
		cmd     fsm.CommandType
		outcome fsm.Outcome
		kind    string
	}
	want := []row{{fsm.Create, fsm.Accepted, "user"}, {fsm.Restart, fsm.Rejected, "user"},
		{fsm.ProvisionSucceeded, fsm.Accepted, "system"}, {fsm.Restart, fsm.Accepted, "user"}, {fsm.ContainerExited, fsm.Stale, "system"}}
	if len(page.Outcomes) != len(want) || page.NextAfter != nil {
		t.Fatalf("outcomes of oc: want %d, got %+v", len(want), page)
	}
	for i, w := range want {
		got := page.Outcomes[i]
		if got.Command != w.cmd || got.Outcome != w.outcome || got.Cause.Kind != w.kind || got.Workspace != "oc" {
			t.Fatalf("outcome %d: want %+v, got %+v", i, w, got)
		}
		if i > 0 && got.StreamSeq <= page.Outcomes[i-1].StreamSeq {
			t.Fatalf("outcome %d out of stream order: %+v", i, page.Outcomes)
		}
	}
	if rej := page.Outcomes[1].Rejection; rej == nil || rej.Code != fsm.CodeBusy || page.Outcomes[1].Actor != "api:"+testTokenName {
		t.Fatalf("refused restart: %+v", page.Outcomes[1])
	}
	if st := page.Outcomes[4]; st.CommandGeneration != 1 || st.Generation != 2 || st.Reason == "" {
		t.Fatalf("stale report: %+v", st)
	}

	t.Run("Paged", func(t *testing.T) {
		var p1, p2 api.OutcomePage
		e.do(t, "GET", "/v1/workspaces/oc/outcomes?limit=3", "").decode(t, &p1)
		if len(p1.Outcomes) != 3 || p1.NextAfter == nil || *p1.NextAfter != page.Outcomes[2].StreamSeq {
			t.Fatalf("first page: %+v", p1)
		}
		e.do(t, "GET", "/v1/workspaces/oc/outcomes?limit=3&after="+strconv.FormatUint(*p1.NextAfter, 10), "").decode(t, &p2)
		if len(p2.Outcomes) != 2 || p2.NextAfter != nil || p2.Outcomes[0].StreamSeq != page.Outcomes[3].StreamSeq {
			t.Fatalf("second page: %+v", p2)
		}
	})

	t.Run("Followed", func(t *testing.T) {
		// The stream helper decodes into api.Event: an Outcome shares its
		// workspace, stream_seq and cause.
		s := e.follow(t, e.srv.URL, "/v1/workspaces/oc/outcomes?follow=1", "Last-Event-ID", strconv.FormatUint(page.Outcomes[3].StreamSeq, 10))
		if got := s.next(t); got.id != page.Outcomes[4].StreamSeq || got.ev.Cause.Command != fsm.ContainerExited {
			t.Fatalf("resumed after the accepted restart: %+v", got)
		}
		e.wantStatus(t, e.do(t, "POST", "/v1/workspaces/oc/start", ""), http.StatusConflict)
		if got := s.next(t); got.ev.Workspace != "oc" || got.ev.Cause.Command != fsm.Start || got.id != got.ev.StreamSeq {
			t.Fatalf("a refused start, followed: %+v", got)
		}
	})

	t.Run("ErrNotFound", func(t *testing.T) {
		r := e.do(t, "GET", "/v1/workspaces/nobody/outcomes", "")
		e.wantStatus(t, r, http.StatusNotFound)
	})
	t.Run("ErrBadParam", func(t *testing.T) {
		r := e.do(t, "GET", "/v1/workspaces/oc/outcomes?watch=true", "")
		e.wantStatus(t, r, http.StatusBadRequest)
	})
}

// A page reads at most MaxOutcomeScan outcomes of all workspaces: one
// workspace among many busy ones costs a bounded read per request, and
// the cursor carries the rest over to the next pages.
func TestWorkspaceOutcomesScanBounded(t *testing.T) {
	const scan = 3
	e := newEnv(t, envOptions{noReadModel: true, configure: func(c *api.Config) { c.MaxOutcomeScan = scan }})
	e.create(t, "oc")
	for i := range 5 {
		e.create(t, "busy"+strconv.Itoa(i))
	}
	e.wantStatus(t, e.do(t, "POST", "/v1/workspaces/oc/restart", ""), http.StatusConflict)

	var got []api.Outcome
	after, pages := "", 0
	for {
		var p api.OutcomePage
		e.do(t, "GET", "/v1/workspaces/oc/outcomes?limit=100"+after, "").decode(t, &p)
		pages++
		got = append(got, p.Outcomes...)
		if p.NextAfter == nil {
			break
		}
		if pages > 10 {
			t.Fatalf("no end after %d pages: %+v", pages, got)
		}
		after = "&after=" + strconv.FormatUint(*p.NextAfter, 10)
	}
	// oc's create, five others, oc's refused restart: 7 outcomes read,
	// at most 3 a page.
	if pages < 3 {
		t.Fatalf("%d pages for 7 outcomes read at most %d a page", pages, scan)
	}
	if len(got) != 2 || got[0].Command != fsm.Create || got[1].Command != fsm.Restart || got[1].Outcome != fsm.Rejected {
		t.Fatalf("outcomes of oc over the pages: %+v", got)
	}
}

// A position past the API's integers (openapi.json's int64) is a bad
// field, on every route that reads one: after+1 wrapped to 0, which
// answered the whole list on outcomes and 500 on /v1/events.
func TestPositionOutOfRange(t *testing.T) {
	e := newEnv(t, envOptions{noReadModel: true})
	e.create(t, "oc")
	const huge = "9223372036854775808" // MaxInt64+1
	for _, tc := range []struct{ path, field, header string }{
		{"/v1/workspaces/oc/outcomes?after=" + huge, "after", ""},
		{"/v1/workspaces/oc/outcomes?after=18446744073709551615", "after", ""},
		{"/v1/events?after=18446744073709551615", "after", ""},
		{"/v1/workspaces/oc/events?since=" + huge, "since", ""},
		{"/v1/workspaces/oc/outcomes", "Last-Event-ID", "18446744073709551615"},
	} {
		var headers []string
		if tc.header != "" {
			headers = []string{"Last-Event-ID", tc.header}
		}
		r := e.do(t, "GET", tc.path, "", headers...)
		e.wantStatus(t, r, http.StatusBadRequest)
		if b := r.errorBody(t); b.Field != tc.field {
			t.Fatalf("%s: field %q, want %q: %s", tc.path, b.Field, tc.field, r.body)
		}
	}
}
