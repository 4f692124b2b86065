package api

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/read"
)

func (s *Server) get(w http.ResponseWriter, r *http.Request) {
	id, ok := s.pathID(w, r)
	if !ok {
		return
	}
	// ?watch=true was silently ignored (issue 14 item 1): follow
	// .../events instead.
	if err := onlyParams(r); err != nil {
		s.writeError(w, r, err)
		return
	}
	if s.cfg.Pool == nil {
		s.noReadModel(w)
		return
	}
	ws, err := read.GetWorkspace(r.Context(), s.cfg.Pool, s.cfg.Store, id)
	if errors.Is(err, read.ErrNoWorkspace) {
		writeNotFound(w, id)
		return
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, ws)
}

func (s *Server) list(w http.ResponseWriter, r *http.Request) {
	if err := onlyParams(r, "status", "limit", "after"); err != nil {
		s.writeError(w, r, err)
		return
	}
	q := r.URL.Query()
	var o read.ListOptions
	if v := q.Get("status"); v != "" {
		st, ok := fsm.ParseStatus(v)
		if !ok || st == fsm.None {
			s.writeError(w, r, badField("status", fmt.Sprintf("%q is not a state: use provisioning, running, stopping, stopped, failed, deleting or deleted", v)))
			return
		}
		o.Status = st
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > read.MaxListLimit {
			s.writeError(w, r, badField("limit", fmt.Sprintf("%q is not a number from 1 to 1000", v)))
			return
		}
		o.Limit = n
	}
	if v := q.Get("after"); v != "" {
		// A cursor is a workspace id (the "next" of the previous page);
		// anything else would reach PostgreSQL as text it may refuse.
		if err := fsm.ValidateID(v); err != nil {
			s.writeError(w, r, badField("after", fmt.Sprintf("%q is not a workspace id: %v", v, err)))
			return
		}
		o.After = v
	}
	if s.cfg.Pool == nil {
		s.noReadModel(w)
		return
	}
	list, err := read.ListWorkspaces(r.Context(), s.cfg.Pool, o)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, list)
}

func (s *Server) noReadModel(w http.ResponseWriter) {
	writeJSON(w, http.StatusServiceUnavailable, ErrorBody{Code: CodeUnavailable, Message: "this server has no read model configured"})
}

func writeNotFound(w http.ResponseWriter, id string) {
	rej := &fsm.Rejection{Code: fsm.CodeNotFound, State: fsm.None, Allowed: []fsm.CommandType{fsm.Create},
		Message: fmt.Sprintf("workspace %s does not exist: create it first", id)}
	writeJSON(w, http.StatusNotFound, rejectionBody(rej, ""))
}
