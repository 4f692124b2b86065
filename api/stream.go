package api

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/internal/termsafe"
	"github.com/turnstile-dev/turnstile/read"
)

// Streams and pages of events (issue 14 item 1). Without follow, a route
// answers one page of JSON; with follow=1 it answers Server-Sent Events:
// first the events after the starting point, then each new one as it is
// appended, each with "id:" set to its sequence so that a reconnecting
// EventSource resumes with Last-Event-ID, exactly after the last event it
// got.

// DefaultPageLimit and MaxPageLimit bound a page of events.
const (
	DefaultPageLimit = 100
	MaxPageLimit     = 1000
)

// DefaultKeepAlive is how often an idle follow stream sends a comment, so
// that proxies and clients can tell it from a dead connection.
const DefaultKeepAlive = 15 * time.Second

// Page is one page of a workspace's events or of the whole stream.
type Page struct {
	Workspace string  `json:"workspace,omitempty"`
	Events    []Event `json:"events"`
	// NextAfter, when set, is the cursor of the next page: pass it as
	// after=. Absent, there is nothing more now.
	NextAfter *uint64 `json:"next_after,omitempty"`
}

// position is where a read starts: after sequence after, of at most limit
// events (0: all), following on if follow.
type position struct {
	after  uint64
	limit  int
	follow bool
	paged  bool // after, since, limit or Last-Event-ID was given
}

// onlyParams refuses a query parameter other than allowed: a misspelled or
// unsupported one (such as ?watch=true) must not be silently ignored.
func onlyParams(r *http.Request, allowed ...string) error {
	for k, vs := range r.URL.Query() {
		if len(vs) > 1 {
			return badField(clip(k, 100), "query parameter given more than once")
		}
		ok := false
		for _, a := range allowed {
			ok = ok || k == a
		}
		if !ok {
			what := "this route takes no query parameters"
			if len(allowed) > 0 {
				what = fmt.Sprintf("this route takes only %v", allowed)
			}
			return badField(clip(k, 100), fmt.Sprintf("unknown query parameter: %s (see docs/operations.md)", what))
		}
	}
	return nil
}

// parsePosition reads after, since, Last-Event-ID, limit and follow.
func parsePosition(r *http.Request) (position, error) {
	var p position
	if err := onlyParams(r, "after", "since", "limit", "follow"); err != nil {
		return p, err
	}
	q := r.URL.Query()
	seq := func(field, v string) (uint64, error) {
		// At most MaxInt64, openapi.json's integers: the largest uint64
		// would also wrap the read's start (after+1) to 0.
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil || n > math.MaxInt64 {
			return 0, badField(field, fmt.Sprintf("%q is not a sequence number", v))
		}
		return n, nil
	}
	given := 0
	if v := q.Get("after"); q.Has("after") {
		n, err := seq("after", v)
		if err != nil {
			return p, err
		}
		p.after, given = n, given+1
	}
	if v := q.Get("since"); q.Has("since") {
		n, err := seq("since", v)
		if err != nil {
			return p, err
		}
		p.after, given = max(n, 1)-1, given+1
	}
	if given > 1 {
		return p, badField("after", "give after or since, not both")
	}
	// An EventSource reconnects to the same URL with the id of the last
	// event it got: that is where it stands now, whatever the URL says.
	if v := r.Header.Get("Last-Event-ID"); v != "" {
		n, err := seq("Last-Event-ID", v)
		if err != nil {
			return p, err
		}
		p.after, given = n, given+1
	}
	if v := q.Get("follow"); q.Has("follow") {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return p, badField("follow", fmt.Sprintf("%q is not 1, 0, true or false", v))
		}
		p.follow = b
	}
	if v := q.Get("limit"); q.Has("limit") {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > MaxPageLimit {
			return p, badField("limit", fmt.Sprintf("%q is not a number from 1 to %d", v, MaxPageLimit))
		}
		if p.follow {
			return p, badField("limit", "a follow stream has no pages: drop limit or follow")
		}
		p.limit = n
	}
	p.paged = given > 0 || p.limit > 0
	if p.paged && p.limit == 0 {
		p.limit = DefaultPageLimit
	}
	return p, nil
}

func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	id, ok := s.pathID(w, r)
	if !ok {
		return
	}
	p, err := parsePosition(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if p.follow {
		s.followWorkspace(w, r, id, p.after)
		return
	}
	if p.paged {
		// Only the page is held, however long the history.
		evs, more, err := read.HistoryPage(r.Context(), s.cfg.Store, id, p.after, p.limit)
		if s.historyError(w, r, id, err) {
			return
		}
		page := Page{Workspace: id, Events: evs}
		if more {
			next := evs[len(evs)-1].Seq
			page.NextAfter = &next
		}
		writeJSON(w, http.StatusOK, page)
		return
	}
	// Today's shape, the whole history, for callers that page not.
	evs, err := read.History(r.Context(), s.cfg.Store, id)
	if s.historyError(w, r, id, err) {
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"workspace": id, "events": evs})
}

// historyError answers a failed history read, if err is one, and says so.
func (s *Server) historyError(w http.ResponseWriter, r *http.Request, id string, err error) bool {
	switch {
	case err == nil:
		return false
	case errors.Is(err, read.ErrNoWorkspace):
		writeNotFound(w, id)
	default:
		s.writeError(w, r, err)
	}
	return true
}

// streamEvents is GET /v1/events: the whole event stream, by stream
// sequence.
func (s *Server) streamEvents(w http.ResponseWriter, r *http.Request) {
	p, err := parsePosition(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if p.follow {
		s.followAll(w, r, p.after)
		return
	}
	if p.limit == 0 {
		p.limit = DefaultPageLimit
	}
	page, err := streamPage(r.Context(), s.cfg.Store, p.after, p.limit)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, page)
}

// streamPage reads up to limit events after stream sequence after with
// one direct batch get (no consumer: a page is a request like any other).
func streamPage(ctx context.Context, store *events.Store, after uint64, limit int) (Page, error) {
	page := Page{Events: []Event{}}
	prev := prevStates{store: store}
	read, last := 0, after // messages read, the newest one taken
	err := store.Events(ctx, after+1, limit+1, func(r events.Record) error {
		read++
		if len(page.Events) == limit {
			return nil // one more exists
		}
		last = r.StreamSeq
		if r.Event == nil {
			return nil // unreadable: skipped, as History skips it
		}
		ev, err := prev.event(ctx, *r.Event)
		if err != nil {
			return err
		}
		page.Events = append(page.Events, ev)
		return nil
	})
	if err != nil {
		return page, fmt.Errorf("events after stream sequence %d: %w", after, err)
	}
	if read == limit+1 {
		// A full batch: there is more (or unreadable messages took the
		// room of events): the next page starts after the last one taken.
		page.NextAfter = &last
	}
	return page, nil
}

// maxRemembered bounds how many workspaces' states a read of the whole
// stream remembers.
const maxRemembered = 10000

// prevStates remembers each workspace's newest state seen by a read of the
// whole stream, to say where each event came from; the first event of a
// workspace in the read looks up the one before it.
type prevStates struct {
	store *events.Store
	last  map[string]fsm.Status
}

func (p *prevStates) event(ctx context.Context, env events.Envelope) (Event, error) {
	if p.last == nil {
		p.last = map[string]fsm.Status{}
	}
	from, ok := p.last[env.Workspace]
	if !ok && env.Seq > 1 {
		var err error
		if from, err = statusBefore(ctx, p.store, env); err != nil {
			return Event{}, err
		}
	}
	if len(p.last) >= maxRemembered {
		clear(p.last) // a long follow stays bounded: forgotten ones are looked up again
	}
	p.last[env.Workspace] = env.State.Status
	return read.EventOf(env, from), nil
}

// statusBefore is the workspace's state before env: that of the newest
// readable event on its subject before env's stream sequence (None if
// there is none).
func statusBefore(ctx context.Context, store *events.Store, env events.Envelope) (fsm.Status, error) {
	h, err := store.LoadBefore(ctx, env.Workspace, env.StreamSeq)
	if err != nil {
		return fsm.None, fmt.Errorf("state of %s before stream sequence %d: %w", env.Workspace, env.StreamSeq, err)
	}
	return h.State.Status, nil
}

// sseItem is one event of a follow stream with its SSE id.
type sseItem struct {
	id uint64
	ev any // an Event or an Outcome
}

// followWorkspace streams workspace id's events after per-workspace
// sequence after, then the new ones, each with id: its sequence.
func (s *Server) followWorkspace(w http.ResponseWriter, r *http.Request, id string, after uint64) {
	head, err := s.cfg.Store.Load(r.Context(), id)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if head.Last == nil {
		writeNotFound(w, id)
		return
	}
	// The read starts at event after, not at event 1: a reconnect to a
	// long history costs what follows it.
	store := s.cfg.Store
	start, err := store.HistoryStart(r.Context(), id, after)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.follow(w, r, after, func(ctx context.Context, out chan<- sseItem) error {
		prev := fsm.None
		return readEvents(ctx, store, id, start, func(env events.Envelope) error {
			from := prev
			prev = env.State.Status
			if env.Seq <= after {
				return nil
			}
			return send(ctx, out, sseItem{id: env.Seq, ev: read.EventOf(env, from)})
		})
	})
}

// followAll streams the whole stream's events after stream sequence after,
// then the new ones, each with id: its stream sequence.
func (s *Server) followAll(w http.ResponseWriter, r *http.Request, after uint64) {
	store := s.cfg.Store
	s.follow(w, r, after, func(ctx context.Context, out chan<- sseItem) error {
		prev := prevStates{store: store}
		return readEvents(ctx, store, "", after+1, func(env events.Envelope) error {
			ev, err := prev.event(ctx, env)
			if err != nil {
				return err
			}
			return send(ctx, out, sseItem{id: env.StreamSeq, ev: ev})
		})
	})
}

func send(ctx context.Context, out chan<- sseItem, it sseItem) error {
	select {
	case out <- it:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// readEvents calls fn for each readable event of workspace id (of every
// workspace if id is empty) from stream sequence from on, including those
// appended later, until ctx ends or fn fails; unreadable messages are
// skipped, as History skips them.
func readEvents(ctx context.Context, store *events.Store, id string, from uint64, fn func(events.Envelope) error) error {
	err := store.SubscribeEvents(ctx, id, from, func(r events.Record) error {
		if r.Event == nil {
			return nil
		}
		return fn(*r.Event)
	})
	if err != nil && ctx.Err() == nil {
		return fmt.Errorf("follow %s: %w", cmp.Or(id, "all workspaces"), err)
	}
	return err
}

// follow answers a Server-Sent Events stream of what read sends, until the
// client goes, the server shuts down (the request's context ends) or read
// fails. It takes one of the MaxWaits slots for its whole life.
func (s *Server) follow(w http.ResponseWriter, r *http.Request, after uint64, read func(context.Context, chan<- sseItem) error) {
	release, ok := s.takeWaitSlot(w, r)
	if !ok {
		return
	}
	defer release()
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	items := make(chan sseItem, 64)
	readErr := make(chan error, 1)
	go func() { readErr <- read(ctx, items) }()
	defer func() { cancel(); <-readErr }()

	rc := http.NewResponseController(w)
	// Each write has WriteTimeout to get through: a client that stops
	// reading is cut off, one that reads slowly is not.
	write := func(b []byte) bool {
		_ = rc.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout))
		if _, err := w.Write(b); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	if !write(fmt.Appendf(nil, "retry: 1000\n: following after %d\n\n", after)) {
		return
	}
	tick := time.NewTicker(s.cfg.KeepAlive)
	defer tick.Stop()
	last := after
	for {
		select {
		case it := <-items:
			if it.id <= last {
				continue // never twice, whatever a consumer reset redelivers
			}
			b, err := json.Marshal(it.ev)
			if err != nil {
				s.log.Error("api: follow: encode event", "err", err)
				return
			}
			b = termsafe.JSON(b) // as writeJSON's answers
			if !write(fmt.Appendf(nil, "id: %d\ndata: %s\n\n", it.id, b)) {
				return
			}
			last = it.id
		case <-tick.C:
			if !write([]byte(": keepalive\n\n")) {
				return
			}
		case err := <-readErr:
			readErr <- err // for the deferred receive
			if ctx.Err() == nil {
				s.log.Warn("api: follow stream ended", "path", r.URL.Path, "err", err)
			}
			return
		case <-ctx.Done():
			return
		}
	}
}
