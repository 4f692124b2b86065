package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/read"
)

// WaitResult is /wait's body, and what the CLI reports after waiting.
type WaitResult struct {
	// Code is "timeout" on a 408 (the state was not reached in time), as
	// every other error answer carries a code; empty otherwise.
	Code    string `json:"code,omitempty"`
	Reached bool   `json:"reached"`
	// Want is the state waited for.
	Want string `json:"want"`
	// State, Generation and EventSeq are the workspace's when the wait ended.
	State      string  `json:"state"`
	Generation uint64  `json:"generation"`
	EventSeq   uint64  `json:"event_seq"`
	LastError  string  `json:"last_error,omitempty"`
	Waited     float64 `json:"waited_seconds"`
}

// ResultOfWait describes a wait for want that ended at h.
func ResultOfWait(want fsm.Status, h events.Head, waited time.Duration) WaitResult {
	st := h.State
	return WaitResult{Reached: st.Status == want, Want: want.String(), State: st.Status.String(), Generation: st.Generation,
		EventSeq: st.Seq, LastError: st.LastError, Waited: waited.Seconds()}
}

func (s *Server) wait(w http.ResponseWriter, r *http.Request) {
	id, ok := s.pathID(w, r)
	if !ok {
		return
	}
	// A misspelled ?gen=7 must not wait for any generation.
	if err := onlyParams(r, "state", "generation", "timeout"); err != nil {
		s.writeError(w, r, err)
		return
	}
	q := r.URL.Query()
	state, ok := fsm.ParseStatus(q.Get("state"))
	if !ok || state == fsm.None {
		s.writeError(w, r, badField("state", fmt.Sprintf("%q is not a state: use provisioning, running, stopping, stopped, failed, deleting or deleted", q.Get("state"))))
		return
	}
	var gen uint64
	if v := q.Get("generation"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			s.writeError(w, r, badField("generation", fmt.Sprintf("%q is not a generation number", v)))
			return
		}
		gen = n
	}
	timeout := s.cfg.DefaultWait
	if v := q.Get("timeout"); v != "" {
		d, err := ParseTimeout(v)
		if err != nil || d > s.cfg.MaxWait {
			s.writeError(w, r, badField("timeout", fmt.Sprintf("%q is not a duration up to %v (such as 30s, 2m, or seconds as a number)", v, s.cfg.MaxWait)))
			return
		}
		timeout = d
	}
	release, ok := s.takeWaitSlot(w, r)
	if !ok {
		return
	}
	defer release()
	// A long poll outlasts the usual deadlines: allow its timeout.
	rc := http.NewResponseController(w)
	_ = rc.SetWriteDeadline(time.Now().Add(timeout + WaitGrace))
	if r.ContentLength != 0 {
		_ = rc.SetReadDeadline(time.Now().Add(timeout + WaitGrace))
	}
	head, err := s.cfg.Store.Load(r.Context(), id)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if head.Last == nil { // no readable event: no workspace
		writeNotFound(w, id)
		return
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	h, err := read.Waiter{Store: s.cfg.Store, NC: s.cfg.NC, Poll: s.cfg.PollInterval}.UntilFrom(ctx, id, head, read.Reached(state, gen))
	res := ResultOfWait(state, h, time.Since(start))
	res.Reached = err == nil
	switch {
	case err == nil:
		writeJSON(w, http.StatusOK, res)
	case errors.Is(err, context.DeadlineExceeded) && r.Context().Err() == nil:
		res.Code = CodeTimeout
		writeJSON(w, http.StatusRequestTimeout, res)
	case r.Context().Err() != nil:
		// The caller went away, or the server is shutting down: never let
		// an unanswered wait read as 200 (reached).
		writeJSON(w, http.StatusServiceUnavailable, ErrorBody{Code: CodeUnavailable,
			Message: "the wait was cut short (the server is shutting down): wait again"})
	default:
		s.writeError(w, r, err)
	}
}

// ParseTimeout reads a Go duration ("90s", "2m") or a number of seconds.
func ParseTimeout(v string) (time.Duration, error) {
	v = strings.TrimSpace(v)
	if n, err := strconv.ParseFloat(v, 64); err == nil {
		if !(n >= 0 && n <= 1e9) { // NaN too
			return 0, fmt.Errorf("timeout %q is out of range", v)
		}
		return time.Duration(n * float64(time.Second)), nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("timeout %q is not a duration such as 30s", v)
	}
	return d, nil
}

// takeWaitSlot takes one of the MaxWaits slots that /wait long polls,
// follow streams and whole-stream audits (GET /v1/audit) share, or
// answers 429 and reports false; release gives the slot back.
func (s *Server) takeWaitSlot(w http.ResponseWriter, r *http.Request) (release func(), ok bool) {
	select {
	case s.waits <- struct{}{}:
		s.metrics.waits.Inc()
		return func() { <-s.waits; s.metrics.waits.Dec() }, true
	default:
		w.Header().Set("Retry-After", "1")
		s.refuse(w, r, http.StatusTooManyRequests, CodeTooManyWaits, fmt.Sprintf(
			"%d waits, follow streams and GET /v1/audit requests are open, the most this server takes at once (--http-max-waits): retry in a moment", s.cfg.MaxWaits))
		return nil, false
	}
}
