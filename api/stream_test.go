package api_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/turnstile-dev/turnstile/api"
	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/fsm"
)

// sseEvent is one event read from a follow stream.
type sseEvent struct {
	id uint64
	ev api.Event
}

// sseStream reads a follow stream in the background.
type sseStream struct {
	resp   *http.Response
	cancel context.CancelFunc
	events chan sseEvent
	done   chan error // the read's end: io.EOF when the server ended it
}

// follow opens a follow stream at base (a server URL) and waits for its
// prelude, so the stream is established when it returns.
func (e *env) follow(t *testing.T, base, path string, headers ...string) *sseStream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, "GET", base+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+e.token)
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req) //nolint:bodyclose // the stream's close closes it
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		cancel()
		t.Fatalf("follow %s: status %d, %s: %s", path, resp.StatusCode, resp.Header.Get("Content-Type"), b)
	}
	s := &sseStream{resp: resp, cancel: cancel, events: make(chan sseEvent, 100), done: make(chan error, 1)}
	started := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		var id, data string
		first := true
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if first {
					first = false
					close(started)
				}
				if data != "" {
					n, _ := strconv.ParseUint(id, 10, 64)
					var ev api.Event
					if err := json.Unmarshal([]byte(data), &ev); err != nil {
						s.done <- fmt.Errorf("event %s: %w", data, err)
						return
					}
					s.events <- sseEvent{id: n, ev: ev}
				}
				id, data = "", ""
			case strings.HasPrefix(line, "id: "):
				id = strings.TrimPrefix(line, "id: ")
			case strings.HasPrefix(line, "data: "):
				data = strings.TrimPrefix(line, "data: ")
			}
		}
		if first {
			close(started)
		}
		err := sc.Err()
		if err == nil {
			err = io.EOF
		}
		s.done <- err
	}()
	select {
	case <-started:
	case <-time.After(30 * time.Second):
		t.Fatal("no prelude on the follow stream in 30s")
	}
	t.Cleanup(s.close)
	return s
}

func (s *sseStream) close() {
	s.cancel()
	s.resp.Body.Close()
}

// next returns the next event, failing after a generous deadline.
func (s *sseStream) next(t *testing.T) sseEvent {
	t.Helper()
	select {
	case ev := <-s.events:
		return ev
	case err := <-s.done:
		t.Fatalf("follow stream ended: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("no event on the follow stream in 30s")
	}
	return sseEvent{}
}

// command sends a user command over HTTP and checks it was accepted.
func (e *env) command(t *testing.T, id, verb string) {
	t.Helper()
	e.wantStatus(t, e.do(t, "POST", "/v1/workspaces/"+id+"/"+verb, ""), http.StatusAccepted)
}

// Issue 14 item 1: a follow stream of a workspace's events, cut off and
// resumed with Last-Event-ID, delivers every event exactly once, in order,
// each with its cause.
func TestFollowWorkspaceResumes(t *testing.T) {
	e := newEnv(t, envOptions{noReadModel: true})
	e.create(t, "res")
	s := e.follow(t, e.srv.URL, "/v1/workspaces/res/events?follow=1")
	got := s.next(t)
	if got.id != 1 || got.ev.Type != fsm.Created || got.ev.Cause != (api.Cause{Kind: "user", Command: fsm.Create, Actor: "api:" + testTokenName}) {
		t.Fatalf("first event: %+v", got)
	}
	e.report(t, "res", fsm.ProvisionSucceeded, 1)
	got = s.next(t)
	if got.id != 2 || got.ev.Type != fsm.Provisioned || got.ev.Cause.Kind != "system" || got.ev.Cause.Command != fsm.ProvisionSucceeded ||
		got.ev.From != "provisioning" || got.ev.To != "running" {
		t.Fatalf("second event: %+v", got)
	}
	s.close()

	// While nobody listens.
	e.command(t, "res", "stop")
	e.report(t, "res", fsm.StopSucceeded, 2)

	s = e.follow(t, e.srv.URL, "/v1/workspaces/res/events?follow=1", "Last-Event-ID", "2")
	e.command(t, "res", "start")
	for _, want := range []fsm.EventType{fsm.StopRequested, fsm.StoppedEv, fsm.StartRequested} {
		got := s.next(t)
		if got.ev.Type != want || got.id != got.ev.Seq {
			t.Fatalf("after resume: %+v, want %s", got, want)
		}
	}

	// since= is inclusive: from event 4 on.
	s2 := e.follow(t, e.srv.URL, "/v1/workspaces/res/events?follow=true&since=4")
	if got := s2.next(t); got.id != 4 || got.ev.Type != fsm.StoppedEv {
		t.Fatalf("since=4: %+v", got)
	}
	// An EventSource reconnects to the same URL with Last-Event-ID: that
	// wins over since.
	s3 := e.follow(t, e.srv.URL, "/v1/workspaces/res/events?follow=true&since=4", "Last-Event-ID", "4")
	if got := s3.next(t); got.id != 5 || got.ev.Type != fsm.StartRequested {
		t.Fatalf("since=4 with Last-Event-ID 4: %+v", got)
	}
}

// A follow stream resumed with Last-Event-ID reads the workspace's events
// from the one it names, not from its first: its consumer starts at that
// event's stream sequence (events.Store.HistoryStart), and the first event
// sent still says where it came from. It started at 1 before.
func TestFollowWorkspaceResumesAtItsCursor(t *testing.T) {
	e := newEnv(t, envOptions{noReadModel: true})
	e.create(t, "far")
	e.report(t, "far", fsm.ProvisionSucceeded, 1)
	e.command(t, "far", "stop")
	e.report(t, "far", fsm.StopSucceeded, 2)
	e.command(t, "far", "start")
	e.report(t, "far", fsm.ProvisionSucceeded, 3)
	e.command(t, "far", "stop")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var sixth uint64
	if err := e.core.Store.History(ctx, "far", func(env events.Envelope) error {
		if env.Seq == 6 {
			sixth = env.StreamSeq
		}
		return nil
	}); err != nil || sixth <= 1 {
		t.Fatalf("event 6 at stream sequence %d, %v", sixth, err)
	}

	s := e.follow(t, e.srv.URL, "/v1/workspaces/far/events?follow=1", "Last-Event-ID", "6")
	if got := s.next(t); got.id != 7 || got.ev.Type != fsm.StopRequested || got.ev.From != "running" || got.ev.To != "stopping" {
		t.Fatalf("after event 6: %+v", got)
	}
	st, err := e.core.JS.Stream(ctx, e.core.Store.Names().EventStream())
	if err != nil {
		t.Fatal(err)
	}
	var starts []uint64
	for info := range st.ListConsumers(ctx).Info() {
		c := info.Config
		if slices.Equal(c.FilterSubjects, []string{e.core.Store.Names().Event("far")}) || c.FilterSubject == e.core.Store.Names().Event("far") {
			starts = append(starts, c.OptStartSeq)
		}
	}
	if len(starts) != 1 || starts[0] != sixth {
		t.Fatalf("the follow's consumers start at %v, want [%d] (event 6)", starts, sixth)
	}
}

// Issue 14 item 1: the whole stream, by stream sequence, resumed with
// Last-Event-ID: every event once, in order, with where it came from.
func TestFollowAllResumes(t *testing.T) {
	e := newEnv(t, envOptions{noReadModel: true})
	e.create(t, "a1")
	s := e.follow(t, e.srv.URL, "/v1/events?follow=1")
	first := s.next(t)
	if first.ev.Workspace != "a1" || first.ev.Seq != 1 || first.id != first.ev.StreamSeq {
		t.Fatalf("first: %+v", first)
	}
	s.close()
	e.create(t, "a2")
	e.report(t, "a1", fsm.ProvisionSucceeded, 1)
	s = e.follow(t, e.srv.URL, "/v1/events?follow=1", "Last-Event-ID", strconv.FormatUint(first.id, 10))
	e.command(t, "a1", "stop")
	last := first.id
	for _, want := range []struct {
		ws   string
		seq  uint64
		from string
	}{{"a2", 1, "none"}, {"a1", 2, "provisioning"}, {"a1", 3, "running"}} {
		got := s.next(t)
		if got.ev.Workspace != want.ws || got.ev.Seq != want.seq || got.ev.From != want.from || got.id <= last || got.id != got.ev.StreamSeq {
			t.Fatalf("after resume: %+v, want %+v after id %d", got, want, last)
		}
		last = got.id
	}
}

// Issue 14 item 1: pages of events with limit and after, a next-page
// cursor, and today's shape without paging parameters.
func TestEventsPaging(t *testing.T) {
	e := newEnv(t, envOptions{noReadModel: true})
	e.create(t, "pg")
	e.report(t, "pg", fsm.ProvisionSucceeded, 1)
	e.command(t, "pg", "stop")
	e.report(t, "pg", fsm.StopSucceeded, 2)
	e.command(t, "pg", "start") // 5 events

	var all struct {
		Workspace string      `json:"workspace"`
		Events    []api.Event `json:"events"`
		NextAfter *uint64     `json:"next_after"`
	}
	e.do(t, "GET", "/v1/workspaces/pg/events", "").decode(t, &all)
	if all.Workspace != "pg" || len(all.Events) != 5 || all.NextAfter != nil {
		t.Fatalf("unpaged: %+v", all)
	}

	var seqs []uint64
	path := "/v1/workspaces/pg/events?limit=2"
	for range 5 {
		var p api.Page
		r := e.do(t, "GET", path, "")
		e.wantStatus(t, r, http.StatusOK)
		r.decode(t, &p)
		if len(p.Events) > 2 {
			t.Fatalf("a page of %d events with limit=2", len(p.Events))
		}
		for _, ev := range p.Events {
			seqs = append(seqs, ev.Seq)
		}
		if p.NextAfter == nil {
			break
		}
		path = fmt.Sprintf("/v1/workspaces/pg/events?limit=2&after=%d", *p.NextAfter)
	}
	if !slices.Equal(seqs, []uint64{1, 2, 3, 4, 5}) {
		t.Fatalf("pages gave %v", seqs)
	}
	// Pages of any size are the unpaged history cut up, each event's From
	// (its predecessor's state) included, with a cursor only where more follow.
	for _, limit := range []int{1, 4, 5, 1000} {
		var got []api.Event
		after := uint64(0)
		for range 6 {
			var p api.Page
			e.do(t, "GET", fmt.Sprintf("/v1/workspaces/pg/events?limit=%d&after=%d", limit, after), "").decode(t, &p)
			got = append(got, p.Events...)
			if p.NextAfter == nil {
				break
			}
			if len(p.Events) != limit || *p.NextAfter != p.Events[len(p.Events)-1].Seq {
				t.Fatalf("limit %d: a page of %d events with next_after %d", limit, len(p.Events), *p.NextAfter)
			}
			after = *p.NextAfter
		}
		if !reflect.DeepEqual(got, all.Events) {
			t.Fatalf("limit %d: pages gave %+v, want %+v", limit, got, all.Events)
		}
	}
	var past api.Page
	e.do(t, "GET", "/v1/workspaces/pg/events?after=5", "").decode(t, &past)
	if len(past.Events) != 0 || past.NextAfter != nil {
		t.Fatalf("after the last event: %+v", past)
	}
	e.wantStatus(t, e.do(t, "GET", "/v1/workspaces/nobody/events?limit=2", ""), http.StatusNotFound)

	// The whole stream, paged by stream sequence.
	var streamSeqs []uint64
	path = "/v1/events?limit=3"
	for range 5 {
		var p api.Page
		e.do(t, "GET", path, "").decode(t, &p)
		for _, ev := range p.Events {
			streamSeqs = append(streamSeqs, ev.StreamSeq)
			if ev.Workspace != "pg" {
				t.Fatalf("event of %q", ev.Workspace)
			}
		}
		if p.NextAfter == nil {
			break
		}
		path = fmt.Sprintf("/v1/events?limit=3&after=%d", *p.NextAfter)
	}
	want := []uint64{}
	for _, ev := range all.Events {
		want = append(want, ev.StreamSeq)
	}
	if !slices.Equal(streamSeqs, want) {
		t.Fatalf("stream pages gave %v, want %v", streamSeqs, want)
	}

	for _, tc := range []struct{ path, field string }{
		{"/v1/workspaces/pg/events?limit=0", "limit"},
		{"/v1/workspaces/pg/events?limit=1001", "limit"},
		{"/v1/workspaces/pg/events?after=x", "after"},
		{"/v1/workspaces/pg/events?after=1&since=2", "after"},
		{"/v1/workspaces/pg/events?after=1&after=2", "after"},
		{"/v1/workspaces/pg/events?follow=maybe", "follow"},
		{"/v1/workspaces/pg/events?follow=1&limit=2", "limit"},
		{"/v1/events?page=2", "page"},
		{"/v1/workspaces/pg?watch=true", "watch"},
		{"/v1/workspaces/pg/explain?verbose=1", "verbose"},
	} {
		r := e.do(t, "GET", tc.path, "")
		e.wantStatus(t, r, http.StatusBadRequest)
		if b := r.errorBody(t); b.Field != tc.field {
			t.Errorf("%s: field %q, want %q: %s", tc.path, b.Field, tc.field, b.Message)
		}
	}
}

// Issue 14 item 1: follow streams end when the server shuts down (serve
// cancels the requests' context) and free their slot when the client goes;
// beyond MaxWaits they are refused with 429.
func TestFollowEndsAndIsCapped(t *testing.T) {
	e := newEnv(t, envOptions{noReadModel: true, configure: func(c *api.Config) { c.MaxWaits = 1; c.KeepAlive = 50 * time.Millisecond }})
	e.create(t, "cap")

	base, cancelReqs := context.WithCancel(context.Background())
	defer cancelReqs()
	srv := httptest.NewUnstartedServer(e.api.Handler())
	srv.Config.BaseContext = func(net.Listener) context.Context { return base }
	srv.Start()
	defer srv.Close()

	s := e.follow(t, srv.URL, "/v1/workspaces/cap/events?follow=1")
	s.next(t)
	r := e.do(t, "GET", "/v1/events?follow=1", "")
	e.wantStatus(t, r, http.StatusTooManyRequests)
	if r.header.Get("Retry-After") == "" || r.errorBody(t).Code != api.CodeTooManyWaits {
		t.Fatalf("429 without Retry-After or code: %v %s", r.header, r.body)
	}

	cancelReqs() // as serve does at shutdown
	select {
	case err := <-s.done:
		if !errors.Is(err, io.EOF) {
			t.Fatalf("stream ended with %v, want a clean end", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the follow stream outlived the server's shutdown by 30s")
	}

	// A client that goes away frees its slot.
	s2 := e.follow(t, e.srv.URL, "/v1/events?follow=1")
	s2.next(t)
	s2.close()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		req, _ := http.NewRequestWithContext(ctx, "GET", e.srv.URL+"/v1/events?follow=1", nil)
		req.Header.Set("Authorization", "Bearer "+e.token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		status := resp.StatusCode
		resp.Body.Close()
		cancel()
		if status == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the slot of a client that went away was not freed in 30s: %d", status)
		}
		time.Sleep(20 * time.Millisecond) // polling a condition, not syncing
	}
}

// Issue 14 item 5: explain on a provisioning workspace names the attempt
// under way, its deadline, the command queued behind it (the engine is
// down, so it stays undecided) and the commands allowed now.
func TestExplainProvisioning(t *testing.T) {
	e := newEnv(t, envOptions{noReadModel: true, configure: func(c *api.Config) {
		c.Deadlines = map[fsm.Status]time.Duration{fsm.Provisioning: 10 * time.Minute}
	}})
	e.create(t, "slow")
	e.wantStatus(t, e.do(t, "GET", "/v1/workspaces/nope/explain", ""), http.StatusNotFound)

	var x api.Explanation
	e.do(t, "GET", "/v1/workspaces/slow/explain", "").decode(t, &x)
	if len(x.Queued) != 0 {
		t.Fatalf("queued with the engine up and idle: %+v", x.Queued)
	}

	for _, eng := range e.core.Engines {
		if err := eng.Close(); err != nil {
			t.Fatal(err)
		}
	}
	cmd := fsm.Command{ID: "queued-stop-1", Type: fsm.Stop, Workspace: "slow", Actor: "someone"}
	e.publishRaw(t, cmd)

	var h struct{ Events []api.Event }
	e.do(t, "GET", "/v1/workspaces/slow/events", "").decode(t, &h)
	created := h.Events[0].Time

	r := e.do(t, "GET", "/v1/workspaces/slow/explain", "")
	e.wantStatus(t, r, http.StatusOK)
	x = api.Explanation{}
	r.decode(t, &x)
	a := x.InFlight
	if x.State != "provisioning" || a == nil || a.Kind != "provision" || a.Generation != 1 || !a.Started.Equal(created) ||
		a.Deadline == nil || !a.Deadline.Equal(created.Add(10*time.Minute)) || a.Cause.Command != fsm.Create {
		t.Fatalf("in flight: %s", r.body)
	}
	if len(x.Queued) != 1 || x.Queued[0].CommandID != cmd.ID || x.Queued[0].Type != fsm.Stop || x.Queued[0].Actor != "someone" {
		t.Fatalf("queued: %s", r.body)
	}
	if !slices.Contains(x.Allowed, fsm.Stop) || !slices.Contains(x.Allowed, fsm.Delete) || slices.Contains(x.Allowed, fsm.Create) {
		t.Fatalf("allowed: %s", r.body)
	}
}
