package api

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"strings"

	"github.com/turnstile-dev/turnstile/client"
	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/internal/jsonstrict"
)

// IdempotencyHeader carries the command id chosen by the caller.
const IdempotencyHeader = "Idempotency-Key"

// CreateRequest is POST /v1/workspaces's body.
type CreateRequest struct {
	ID   string    `json:"id"`
	Spec *fsm.Spec `json:"spec,omitempty"`
}

func (s *Server) create(w http.ResponseWriter, r *http.Request) {
	if err := onlyParams(r); err != nil {
		s.writeError(w, r, err)
		return
	}
	var req CreateRequest
	if err := decodeBody(r, &req, true); err != nil {
		s.writeError(w, r, err)
		return
	}
	if err := fsm.ValidateID(req.ID); err != nil {
		s.writeError(w, r, badField("id", err.Error()))
		return
	}
	if req.Spec != nil {
		if err := fsm.ValidateSpec(*req.Spec); err != nil {
			s.writeError(w, r, badField(specField(err), err.Error()))
			return
		}
	}
	s.send(w, r, fsm.Command{Type: fsm.Create, Workspace: req.ID, Spec: req.Spec})
}

// command handles the commands without a body: start, stop, restart, delete.
func (s *Server) command(t fsm.CommandType) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id, ok := s.pathID(w, r)
		if !ok {
			return
		}
		if err := noInput(r); err != nil {
			s.writeError(w, r, err)
			return
		}
		s.send(w, r, fsm.Command{Type: t, Workspace: id})
	}
}

// configure handles PUT /v1/workspaces/{id}/spec, whose body is the spec.
func (s *Server) configure(w http.ResponseWriter, r *http.Request) {
	id, ok := s.pathID(w, r)
	if !ok {
		return
	}
	if err := onlyParams(r); err != nil {
		s.writeError(w, r, err)
		return
	}
	var spec fsm.Spec
	if err := decodeBody(r, &spec, true); err != nil {
		s.writeError(w, r, err)
		return
	}
	if err := fsm.ValidateSpec(spec); err != nil {
		s.writeError(w, r, badField(specField(err), err.Error()))
		return
	}
	s.send(w, r, fsm.Command{Type: fsm.Configure, Workspace: id, Spec: &spec})
}

// send publishes cmd under the request's idempotency key and answers with
// its outcome.
func (s *Server) send(w http.ResponseWriter, r *http.Request, cmd fsm.Command) {
	if key := r.Header.Get(IdempotencyHeader); key != "" {
		if err := fsm.ValidateUserCommandID(key); err != nil {
			s.writeError(w, r, badField(IdempotencyHeader, err.Error()))
			return
		}
		cmd.ID = key
	}
	// The actor names the token that sent the command.
	cmd.Actor = ActorPrefix + cmp.Or(TokenName(r.Context()), "unknown")
	send := s.cfg.Client.Send // a key may have been used: Send looks its outcome up
	if cmd.ID == "" {
		cmd.ID, send = client.NewCommandID(), s.cfg.Client.SendNew
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.CommandTimeout)
	defer cancel()
	o, err := send(ctx, cmd)
	switch {
	case errors.Is(err, client.ErrNoOutcome):
		writeJSON(w, http.StatusGatewayTimeout, ErrorBody{Code: CodeTimeout, CommandID: cmd.ID, Command: cmd.Type,
			Message: fmt.Sprintf("no outcome within %v: the command is stored and will be handled; repeat the request with %s: %s to learn its outcome",
				s.cfg.CommandTimeout, IdempotencyHeader, cmd.ID)})
		return
	case err != nil:
		status, body := s.errorAnswer(r, err)
		if status == http.StatusServiceUnavailable {
			// A try of the publish may have reached the stream before NATS
			// stopped answering: the id makes a repeat the same command,
			// where one under a new id could be a second.
			body.CommandID, body.Command = cmd.ID, cmd.Type
			body.Message = fmt.Sprintf("NATS did not answer, so the command may or may not be stored: repeat the request with %s: %s, "+
				"under which it is recorded once however often it is sent (details in the server log)", IdempotencyHeader, cmd.ID)
		}
		writeJSON(w, status, body)
		return
	}
	w.Header().Set("Location", "/v1/workspaces/"+cmd.Workspace)
	writeOutcome(w, o)
}

// writeOutcome answers with an outcome: 202 accepted, 200 no-op or stale,
// and a rejection's status from StatusOf.
func writeOutcome(w http.ResponseWriter, o events.OutcomeRecord) {
	switch o.Outcome {
	case fsm.Rejected:
		rej := o.Rejection
		if rej == nil {
			rej = &fsm.Rejection{Code: fsm.CodeInvalid, Command: o.CommandType, State: o.State, Generation: o.Generation, Message: o.Reason}
		}
		writeJSON(w, StatusOf(rej.Code), rejectionBody(rej, o.CommandID))
	case fsm.Accepted:
		writeJSON(w, http.StatusAccepted, ResultOf(o))
	default:
		writeJSON(w, http.StatusOK, ResultOf(o))
	}
}

// decodeBody reads one JSON object, refusing unknown fields, trailing
// data, keys given twice and field names in another case, and names the
// field that is wrong.
func decodeBody(r *http.Request, v any, required bool) error {
	body, err := io.ReadAll(io.LimitReader(r.Body, events.MaxCommandBytes+1))
	if err != nil {
		return badField("body", "could not be read: "+err.Error())
	}
	if len(body) > events.MaxCommandBytes {
		return badField("body", fmt.Sprintf("is larger than %d bytes", events.MaxCommandBytes))
	}
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	if len(trimmed) == 0 {
		if required {
			return badField("body", "is empty: send a JSON object")
		}
		return nil
	}
	// null would decode as an empty object (a configure clearing the
	// spec), and a string or an array says nothing the route takes.
	if trimmed[0] != '{' {
		return badField("body", "must be a JSON object"+notObject(trimmed[0]))
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var te *json.UnmarshalTypeError
		var se *json.SyntaxError
		switch {
		case errors.As(err, &te):
			return badField(cmp.Or(te.Field, "body"), fmt.Sprintf("has the wrong type: want %s, got JSON %s", te.Type, te.Value))
		case errors.As(err, &se):
			return badField("body", fmt.Sprintf("is not valid JSON at byte %d: %v", se.Offset, err))
		case strings.HasPrefix(err.Error(), "json: unknown field "):
			// encoding/json has no typed error for unknown fields.
			name := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
			return badField(name, "is not a known field")
		default:
			return badField("body", err.Error())
		}
	}
	// Not dec.More(): it reports false for a trailing '}' or ']'.
	if rest := bytes.TrimLeft(body[dec.InputOffset():], " \t\r\n"); len(rest) > 0 {
		return badField("body", "has data after the JSON object")
	}
	// A key given twice or a field name in another case: encoding/json
	// takes them silently (issue 12 item 11).
	var se *jsonstrict.Error
	if err := jsonstrict.Check(body, reflect.TypeOf(v)); errors.As(err, &se) {
		return badField(se.FieldPath(), se.Reason())
	} else if err != nil {
		return badField("body", err.Error())
	}
	return nil
}

// noInput refuses any query parameter and any body: the input of a route
// that takes only its path (start, stop, restart and the deletes).
func noInput(r *http.Request) error {
	if err := onlyParams(r); err != nil {
		return err
	}
	return noBody(r)
}

// noBody refuses a body on a route that takes none: a {"force": true} the
// route would ignore must not read as taken. Whitespace alone counts as no
// body, as decodeBody counts it as empty.
func noBody(r *http.Request) error {
	body, err := io.ReadAll(io.LimitReader(r.Body, events.MaxCommandBytes+1))
	if err != nil {
		return badField("body", "could not be read: "+err.Error())
	}
	if len(bytes.TrimLeft(body, " \t\r\n")) > 0 {
		return badField("body", "this route takes no body: send none")
	}
	return nil
}

// notObject names the JSON value a body starting with b is, when it is
// one, for a refusal that says what was sent rather than a Go type.
func notObject(b byte) string {
	switch {
	case b == 'n':
		return ", not null"
	case b == '[':
		return ", not an array"
	case b == '"':
		return ", not a string"
	case b == 't' || b == 'f':
		return ", not a boolean"
	case b == '-' || '0' <= b && b <= '9':
		return ", not a number"
	}
	return ""
}

// specField extracts the field a fsm.ValidateSpec error names ("spec.cpus").
func specField(err error) string {
	msg := err.Error()
	if i := strings.IndexAny(msg, " [("); i > 0 && strings.HasPrefix(msg, "spec.") {
		return msg[:i]
	}
	return "spec"
}
