package api

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/turnstile-dev/turnstile/client"
	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/internal/termsafe"
)

// Error codes of failures that are not rejections by the lifecycle.
const (
	CodeUnauthorized = "unauthorized" // no or wrong bearer token
	CodeTimeout      = "timeout"      // no outcome or state before the deadline
	CodeUnavailable  = "unavailable"  // 503: NATS or PostgreSQL did not answer
	CodeInternal     = "internal"     // 500: anything else; details are logged, not shown
	// CodeIDReused: the Idempotency-Key was used by a different request.
	CodeIDReused = "id_reused"
	// Refusals of the guards every request passes (guard.go).
	CodeWrongHost            = "wrong_host"             // 421: a Host that is not loopback on a loopback listener
	CodeCrossOrigin          = "cross_origin"           // 403: a browser's write from another origin
	CodeUnsupportedMediaType = "unsupported_media_type" // 415: a write whose Content-Type is not application/json
	CodeTooManyWaits         = "too_many_waits"         // 429: the cap on open /wait requests is reached
)

// StatusOf is the one table from a rejection code to an HTTP status.
func StatusOf(c fsm.Code) int {
	switch c {
	case fsm.CodeNotFound:
		return http.StatusNotFound
	case fsm.CodeExists, fsm.CodeBusy, fsm.CodeGone:
		return http.StatusConflict
	case fsm.CodeInvalid:
		return http.StatusBadRequest
	}
	return http.StatusInternalServerError
}

// CodeOf maps an error response back to a rejection code: the body's code
// when it is one, else what the status implies ("" when it implies none).
// It is the inverse of StatusOf for clients of the HTTP API.
func CodeOf(status int, body ErrorBody) fsm.Code {
	switch c := fsm.Code(body.Code); c {
	case fsm.CodeNotFound, fsm.CodeExists, fsm.CodeBusy, fsm.CodeGone, fsm.CodeInvalid:
		return c
	}
	switch status {
	case http.StatusNotFound:
		return fsm.CodeNotFound
	case http.StatusBadRequest:
		return fsm.CodeInvalid
	}
	return ""
}

// ErrorBody is every error response. Rejections fill in the command, the
// state and generation the workspace is in, and what is allowed now.
type ErrorBody struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	// Field names the request field that is wrong (400 only).
	Field       string            `json:"field,omitempty"`
	CommandID   string            `json:"command_id,omitempty"`
	Command     fsm.CommandType   `json:"command,omitempty"`
	State       string            `json:"state,omitempty"`
	Generation  *uint64           `json:"generation,omitempty"`
	SpecVersion *uint64           `json:"spec_version,omitempty"`
	Allowed     []fsm.CommandType `json:"allowed,omitempty"`
}

// rejectionBody is the body of a refused command.
func rejectionBody(r *fsm.Rejection, commandID string) ErrorBody {
	gen, spec := r.Generation, r.SpecVersion
	allowed := r.Allowed
	if allowed == nil {
		allowed = []fsm.CommandType{}
	}
	return ErrorBody{Code: string(r.Code), Message: r.Message, CommandID: commandID, Command: r.Command,
		State: r.State.String(), Generation: &gen, SpecVersion: &spec, Allowed: allowed}
}

// fieldError is bad input in one named field.
type fieldError struct {
	field string
	msg   string
}

// Error is the message the answer carries: the field, then msg; or msg
// alone when it starts with the field's name already, as the fsm's
// messages do ("spec.memory_bytes 1024 is out of range…"), which would
// otherwise read "spec.memory_bytes: spec.memory_bytes 1024 …".
func (e *fieldError) Error() string {
	if namesField(e.msg, e.field) {
		return e.msg
	}
	return e.field + ": " + e.msg
}

// namesField reports whether msg starts with the name field, not with a
// longer name that begins with it (spec.env, not spec.envx).
func namesField(msg, field string) bool {
	if field == "" || !strings.HasPrefix(msg, field) {
		return false
	}
	rest := msg[len(field):]
	if rest == "" {
		return true
	}
	c := rest[0]
	return !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-')
}

func badField(field, msg string) error { return &fieldError{field: field, msg: msg} }

// writeJSON answers v as indented JSON. Characters that act on a terminal
// and encoding/json leaves as they are (C1, DEL, bidi controls: a
// container's text in a failure's reason) go out as \u escapes
// (termsafe.Writer), the same value to any decoder: answers are read
// with curl on terminals too.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(termsafe.Writer(w))
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// writeError answers with err's status and body: rejections and bad input
// as they are, everything else as a code without internal details (those
// are logged).
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	status, body := s.errorAnswer(r, err)
	writeJSON(w, status, body)
}

// errorAnswer is the status and body writeError answers err with, for
// answers that carry an error otherwise (the final line of an ndjson
// stream); it logs what it does not show.
func (s *Server) errorAnswer(r *http.Request, err error) (int, ErrorBody) {
	var rej *fsm.Rejection
	var fe *fieldError
	var reused *client.IDReusedError
	switch {
	case errors.As(err, &reused):
		// As the Idempotency-Key draft asks: 422 for a key reused with
		// another request.
		return http.StatusUnprocessableEntity, ErrorBody{Code: CodeIDReused, Field: IdempotencyHeader,
			CommandID: reused.ID, Command: reused.Type, Message: reused.Error()}
	case errors.As(err, &fe):
		return http.StatusBadRequest, ErrorBody{Code: string(fsm.CodeInvalid), Message: fe.Error(), Field: fe.field}
	case errors.As(err, &rej):
		return StatusOf(rej.Code), rejectionBody(rej, "")
	case unavailable(err):
		s.log.Error("api: request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		return http.StatusServiceUnavailable, ErrorBody{Code: CodeUnavailable,
			Message: "NATS or PostgreSQL did not answer; see the server log, then retry"}
	default:
		// Not known to be passing: a retry may not help, so no 503.
		s.log.Error("api: request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		return http.StatusInternalServerError, ErrorBody{Code: CodeInternal,
			Message: "the request could not be completed; see the server log"}
	}
}

// unavailable reports whether err says NATS or PostgreSQL could not be
// reached or did not answer in time: a failure that a retry may get past.
// It classifies by the libraries' error values and types, never by text.
func unavailable(err error) bool {
	if events.IsUnavailable(err) || errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var connect *pgconn.ConnectError
	var netErr net.Error
	return errors.As(err, &connect) || errors.As(err, &netErr) || pgconn.Timeout(err) || pgconn.SafeToRetry(err)
}

// pathID is the request's {id}, or false after answering 400 when it is
// not a valid workspace id.
func (s *Server) pathID(w http.ResponseWriter, r *http.Request) (string, bool) {
	id := r.PathValue("id")
	if err := fsm.ValidateID(id); err != nil {
		s.writeError(w, r, badField("id", err.Error()))
		return "", false
	}
	return id, true
}
