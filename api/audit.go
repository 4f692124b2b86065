package api

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/turnstile-dev/turnstile/audit"
	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/internal/termsafe"
)

// The audit runs here, in one place, whether the CLI reads the stream
// itself or asks serve (issue 14 item 2): serve replays and returns the
// report the CLI prints, so both paths cannot drift apart. The API's event
// views do not carry the state stored with each event, which the audit
// compares, nor the unreadable messages it reports.

// AuditReport is the body of GET /v1/workspaces/{id}/audit and GET
// /v1/audit, and `turnstile audit -o json`.
type AuditReport struct {
	Workspace  string            `json:"workspace,omitempty"`
	Workspaces int               `json:"workspaces,omitempty"`
	Events     int               `json:"events"`
	Through    uint64            `json:"through_stream_seq,omitempty"`
	OK         bool              `json:"ok"`
	Violations []audit.Violation `json:"violations"`
	// State is the replayed state after the last event (one workspace).
	State *fsm.Workspace `json:"state,omitempty"`
	// At is the replayed state at the point asked for; nil before the
	// first event.
	At      *fsm.Workspace `json:"at,omitempty"`
	AtLabel string         `json:"at_label,omitempty"`
}

// AuditPoint selects the events up to a sequence or a time.
type AuditPoint struct {
	Seq  uint64
	Time time.Time
}

// ParseAuditPoint reads an event sequence (a number) or an RFC 3339 time.
func ParseAuditPoint(s string) (AuditPoint, error) {
	if n, err := strconv.ParseUint(s, 10, 64); err == nil {
		return AuditPoint{Seq: n}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return AuditPoint{}, fmt.Errorf("%q: give an event sequence (a number) or an RFC 3339 time such as 2026-01-02T15:04:05Z", s)
	}
	return AuditPoint{Time: t}, nil
}

func (p AuditPoint) includes(env events.Envelope) bool {
	if p.Seq > 0 {
		return env.Seq <= p.Seq
	}
	return !env.Time.After(p.Time)
}

// Audit replays workspace id's history through the lifecycle; at, when
// set, also reports the state at that point. Unreadable messages on the
// workspace's subject are findings. It returns ErrNoWorkspace when the
// subject holds nothing at all.
func Audit(ctx context.Context, store *events.Store, id string, at *AuditPoint) (AuditReport, error) {
	r := audit.NewReplayer(id)
	rep := AuditReport{Workspace: id, Violations: []audit.Violation{}}
	var atEnv *events.Envelope
	err := store.HistoryRecords(ctx, id, func(rec events.Record) error {
		if rec.Unreadable != nil {
			rep.Violations = append(rep.Violations, unreadableFinding(store.Names(), rec.Unreadable))
			return nil
		}
		env := *rec.Event
		r.Step(env)
		rep.Events++
		if at != nil && at.includes(env) {
			s := r.State
			rep.At = &s
			atEnv = &env
		}
		return nil
	})
	if err != nil {
		return AuditReport{}, fmt.Errorf("audit %s: %w", id, err)
	}
	if rep.Events == 0 && len(rep.Violations) == 0 {
		return AuditReport{}, ErrNoWorkspace
	}
	rep.Violations = append(rep.Violations, r.Violations...)
	sortViolations(rep.Violations)
	rep.OK = len(rep.Violations) == 0
	state := r.State
	rep.State = &state
	if at != nil {
		rep.AtLabel = "before the first event: the workspace did not exist yet"
		if atEnv != nil {
			rep.AtLabel = fmt.Sprintf("event %d (stream seq %d) at %s", atEnv.Seq, atEnv.StreamSeq, atEnv.Time.Format(time.RFC3339Nano))
		}
	}
	return rep, nil
}

// AuditAll replays every workspace in one pass over the event stream, up
// to its last message when the pass starts. progress, when set, is called
// now and then with the stream sequence reached and the last one.
func AuditAll(ctx context.Context, store *events.Store, progress func(seq, last uint64)) (AuditReport, error) {
	last, err := store.LastSeq(ctx)
	if err != nil {
		return AuditReport{}, fmt.Errorf("audit: %w", err)
	}
	replayers := map[string]*audit.Replayer{}
	rep := AuditReport{Violations: []audit.Violation{}, Through: last}
	if progress != nil {
		progress(0, last)
	}
	err = store.Replay(ctx, 1, last, func(rec events.Record) error {
		if progress != nil && rec.StreamSeq%256 == 0 {
			progress(rec.StreamSeq, last)
		}
		if rec.Unreadable != nil {
			rep.Violations = append(rep.Violations, unreadableFinding(store.Names(), rec.Unreadable))
			return nil
		}
		env := rec.Event
		if env == nil {
			return nil
		}
		r := replayers[env.Workspace]
		if r == nil {
			r = audit.NewReplayer(env.Workspace)
			replayers[env.Workspace] = r
		}
		r.Step(*env)
		rep.Events++
		return nil
	})
	if err != nil {
		return AuditReport{}, fmt.Errorf("audit: %w", err)
	}
	if progress != nil {
		progress(last, last)
	}
	for _, r := range replayers {
		rep.Violations = append(rep.Violations, r.Violations...)
	}
	sortViolations(rep.Violations)
	rep.Workspaces = len(replayers)
	rep.OK = len(rep.Violations) == 0
	return rep, nil
}

// unreadableFinding reports a message no reader can use: every reader
// skips it, so it changed nothing, but the engine never writes one, so it
// is corruption or a forgery, and the audit fails on it.
func unreadableFinding(n events.Names, u *events.Unreadable) audit.Violation {
	v := audit.Violation{StreamSeq: u.StreamSeq, Problem: fmt.Sprintf("unreadable message on %s (%s, %d bytes), skipped by every reader: %v",
		u.Subject, events.ReasonOf(u), len(u.Data), u.Err)}
	if n.IsEvent(u.Subject) {
		v.Workspace = n.WorkspaceOf(u.Subject)
	}
	return v
}

func sortViolations(vs []audit.Violation) {
	slices.SortStableFunc(vs, func(x, y audit.Violation) int { return cmp.Compare(x.StreamSeq, y.StreamSeq) })
}

func (s *Server) auditOne(w http.ResponseWriter, r *http.Request) {
	id, ok := s.pathID(w, r)
	if !ok {
		return
	}
	if err := onlyParams(r, "at"); err != nil {
		s.writeError(w, r, err)
		return
	}
	var at *AuditPoint
	if v := r.URL.Query().Get("at"); v != "" {
		p, err := ParseAuditPoint(v)
		if err != nil {
			s.writeError(w, r, badField("at", err.Error()))
			return
		}
		at = &p
	}
	rep, err := Audit(r.Context(), s.cfg.Store, id, at)
	if errors.Is(err, ErrNoWorkspace) {
		writeNotFound(w, id)
		return
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, rep)
}

// NDJSON is the media type of GET /v1/audit's streamed answer: one JSON
// object a line (asked for with Accept: application/x-ndjson).
const NDJSON = "application/x-ndjson"

// DefaultProgressInterval is Config.ProgressInterval's default: about
// five progress lines a second, enough for a bar, few enough to cost
// nothing.
const DefaultProgressInterval = 200 * time.Millisecond

// AuditLine is one line of GET /v1/audit's application/x-ndjson answer:
// progress lines while the stream is replayed, then exactly one final
// line, the report or the error. Exactly one of Progress, Report and Error
// is set.
type AuditLine struct {
	Progress *AuditProgress `json:"progress,omitempty"`
	Report   *AuditReport   `json:"report,omitempty"`
	Error    *ErrorBody     `json:"error,omitempty"`
	// Status, with Error, is the status the plain answer would have had:
	// the streamed answer's own status is 200 by then.
	Status int `json:"status,omitempty"`
}

// AuditProgress is how far a replay has come: stream sequence Seq of
// Last, the last one when it started (the one it stops at).
type AuditProgress struct {
	Seq  uint64 `json:"seq"`
	Last uint64 `json:"last"`
}

// auditAll is a long read: it takes a wait slot, as a follow stream does,
// may run for up to MaxWait (the write deadline is lifted that long), and
// stops when the client goes. With Accept: application/x-ndjson it
// streams its progress (auditAllStream); otherwise it answers the report
// alone, as it always did.
func (s *Server) auditAll(w http.ResponseWriter, r *http.Request) {
	if err := onlyParams(r); err != nil {
		s.writeError(w, r, err)
		return
	}
	release, ok := s.takeWaitSlot(w, r)
	if !ok {
		return
	}
	defer release()
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.MaxWait)
	defer cancel()
	rc := http.NewResponseController(w)
	_ = rc.SetWriteDeadline(time.Now().Add(s.cfg.MaxWait + s.cfg.WriteTimeout))
	w.Header().Add("Vary", "Accept") // the answer's form depends on it
	if wantsNDJSON(r) {
		s.auditAllStream(ctx, w, r, rc)
		return
	}
	rep, err := AuditAll(ctx, s.cfg.Store, nil)
	if err != nil {
		status, body := s.auditAllError(ctx, r, err)
		writeJSON(w, status, body)
		return
	}
	writeJSON(w, http.StatusOK, rep)
}

// auditAllStream answers GET /v1/audit as application/x-ndjson: a
// progress line at the start, at most one every ProgressInterval while
// replaying, one at the end, each flushed as it is written, then the
// report or the error as the last line. The 200 goes out before the
// replay starts, so that the client sees the audit under way; from then
// on an error can only be that last line.
func (s *Server) auditAllStream(ctx context.Context, w http.ResponseWriter, r *http.Request, rc *http.ResponseController) {
	h := w.Header()
	h.Set("Content-Type", NDJSON)
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no") // a buffering proxy would hold the progress back
	w.WriteHeader(http.StatusOK)
	// A client that is gone (a write fails) is not worth replaying for.
	// One that stays but stops reading is held by the write deadline only
	// once the socket's buffers are full: progress lines are small, so it
	// keeps its wait slot up to MaxWait, as a follow stream's would.
	rctx, stop := context.WithCancel(ctx)
	defer stop()
	enc := json.NewEncoder(termsafe.Writer(w)) // Encode ends each value with a newline: a line each; escaped as writeJSON's
	var werr error
	write := func(l AuditLine) {
		if werr == nil {
			if werr = enc.Encode(l); werr == nil {
				werr = rc.Flush()
			}
		}
		if werr != nil {
			stop()
		}
	}
	if werr = rc.Flush(); werr != nil {
		return
	}
	var sent time.Time
	rep, err := AuditAll(rctx, s.cfg.Store, func(seq, last uint64) {
		// The first (sent is zero) and the last always go: the client
		// learns the total, and that the replay is through.
		now := time.Now()
		if seq != last && now.Sub(sent) < s.cfg.ProgressInterval {
			return
		}
		sent = now
		write(AuditLine{Progress: &AuditProgress{Seq: seq, Last: last}})
	})
	switch {
	case werr != nil:
		s.log.Debug("api: audit stream cut", "path", r.URL.Path, "err", werr)
	case err != nil && r.Context().Err() != nil:
		s.log.Debug("api: audit stream: the client went", "path", r.URL.Path, "err", err)
	case err != nil:
		status, body := s.auditAllError(ctx, r, err)
		// The 200 is out: the metrics and the access log count the
		// status the error line carries.
		effectiveStatus(w, status)
		write(AuditLine{Error: &body, Status: status})
	default:
		write(AuditLine{Report: &rep})
	}
}

// auditAllError is the status and body of a failed whole-stream audit: a
// replay cut off by MaxWait says so and how to get past it.
func (s *Server) auditAllError(ctx context.Context, r *http.Request, err error) (int, ErrorBody) {
	if r.Context().Err() == nil && errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return http.StatusServiceUnavailable, ErrorBody{Code: CodeUnavailable, Message: fmt.Sprintf(
			"the audit did not finish in %s, the longest a request of this server lasts: run `turnstile audit --all` with NATS access", s.cfg.MaxWait)}
	}
	return s.errorAnswer(r, err)
}

// wantsNDJSON reports whether the request's Accept names
// application/x-ndjson (without q=0): only then does GET /v1/audit stream,
// so that callers of the plain answer (any other Accept, or none) keep it.
func wantsNDJSON(r *http.Request) bool {
	for _, v := range r.Header.Values("Accept") {
		for part := range strings.SplitSeq(v, ",") {
			mt, params, err := mime.ParseMediaType(strings.TrimSpace(part))
			if err != nil || mt != NDJSON {
				continue
			}
			if q, ok := params["q"]; ok {
				if f, err := strconv.ParseFloat(q, 64); err != nil || !(f > 0) { // NaN too
					continue
				}
			}
			return true
		}
	}
	return false
}
