package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/projector"
)

// Where a Workspace was read from.
const (
	SourceReadModel  = "read_model"  // the PostgreSQL read model
	SourceEventStore = "event_store" // the stream, when the read model has not caught up yet
)

// Workspace is one workspace as reads show it, with the point in its
// history the answer reflects.
type Workspace struct {
	ID                 string     `json:"id"`
	Status             string     `json:"status"`
	Generation         uint64     `json:"generation"`
	SpecVersion        uint64     `json:"spec_version"`
	AttemptSpecVersion uint64     `json:"attempt_spec_version"`
	Spec               fsm.Spec   `json:"spec"`
	ContainerID        string     `json:"container_id,omitempty"`
	LastError          string     `json:"last_error,omitempty"`
	CreatedAt          *time.Time `json:"created_at,omitempty"`
	UpdatedAt          *time.Time `json:"updated_at,omitempty"`
	StatusChangedAt    *time.Time `json:"status_changed_at,omitempty"`
	DeletedAt          *time.Time `json:"deleted_at,omitempty"`
	// EventSeq is the workspace's event the answer is current to (its
	// history up to and including it); StreamSeq is that event's position
	// in the stream.
	EventSeq  uint64 `json:"event_seq"`
	StreamSeq uint64 `json:"stream_seq"`
	// LatestEventSeq is the workspace's newest event in the stream when the
	// answer was made (single reads only): when it is beyond EventSeq, the
	// read model has not caught up yet.
	LatestEventSeq uint64 `json:"latest_event_seq,omitempty"`
	Source         string `json:"source"`
}

// WorkspaceList is GET /v1/workspaces's body.
type WorkspaceList struct {
	Workspaces []Workspace `json:"workspaces"`
	// Checkpoint is the stream sequence the read model has applied up to.
	Checkpoint uint64 `json:"checkpoint"`
	// Next, when set, is the "after" value for the next page.
	Next string `json:"next,omitempty"`
}

func fromReadModel(w projector.Workspace) Workspace {
	t := func(v time.Time) *time.Time { return &v }
	return Workspace{ID: w.ID, Status: w.Status.String(), Generation: w.Generation, SpecVersion: w.SpecVersion,
		AttemptSpecVersion: w.AttemptSpecVersion, Spec: w.Spec, ContainerID: w.ContainerID, LastError: w.LastError,
		CreatedAt: t(w.CreatedAt), UpdatedAt: t(w.UpdatedAt), StatusChangedAt: t(w.StatusChangedAt), DeletedAt: w.DeletedAt,
		EventSeq: w.LastEventSeq, StreamSeq: w.LastStreamSeq, Source: SourceReadModel}
}

func fromHead(h events.Head) Workspace {
	st := h.State
	w := Workspace{ID: st.ID, Status: st.Status.String(), Generation: st.Generation, SpecVersion: st.SpecVersion,
		AttemptSpecVersion: st.AttemptSpecVersion, Spec: st.Spec, LastError: st.LastError,
		EventSeq: st.Seq, StreamSeq: h.StreamSeq, LatestEventSeq: st.Seq, Source: SourceEventStore}
	if h.Last != nil {
		t := h.Last.Time
		w.UpdatedAt = &t
	}
	return w
}

// ErrNoWorkspace means neither the read model nor the stream knows the
// workspace.
var ErrNoWorkspace = errors.New("no such workspace")

// GetWorkspace reads a workspace from the read model and names the newest
// event the stream holds for it. When the read model has no row yet but
// the stream has events (the projector lags by a few milliseconds), it
// answers from the stream instead (Source says which). It returns an error
// matching ErrNoWorkspace when neither knows id.
func GetWorkspace(ctx context.Context, pool *pgxpool.Pool, store *events.Store, id string) (Workspace, error) {
	head, err := store.Load(ctx, id)
	if err != nil {
		return Workspace{}, err
	}
	rm, err := projector.GetWorkspace(ctx, pool, id)
	switch {
	case errors.Is(err, projector.ErrNotFound):
		if head.Last == nil { // no readable event: no workspace
			return Workspace{}, fmt.Errorf("workspace %s: %w", id, ErrNoWorkspace)
		}
		return fromHead(head), nil
	case err != nil:
		return Workspace{}, err
	}
	w := fromReadModel(rm)
	w.LatestEventSeq = head.State.Seq
	return w, nil
}

// ListOptions filter and page a list.
type ListOptions struct {
	Status fsm.Status // "" for every status
	After  string     // ids after this one
	Limit  int        // 0 means 100; at most 1000
}

// ListWorkspaces reads workspaces from the read model, ordered by id, and
// the checkpoint they reflect.
func ListWorkspaces(ctx context.Context, pool *pgxpool.Pool, o ListOptions) (WorkspaceList, error) {
	if o.Limit <= 0 {
		o.Limit = 100
	}
	o.Limit = min(o.Limit, 1000)
	tx, err := pool.Begin(ctx)
	if err != nil {
		return WorkspaceList{}, fmt.Errorf("list workspaces: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	// One snapshot for the rows and the checkpoint, so they agree.
	if _, err := tx.Exec(ctx, `SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY`); err != nil {
		return WorkspaceList{}, fmt.Errorf("list workspaces: %w", err)
	}
	out := WorkspaceList{Workspaces: []Workspace{}}
	cp, err := projector.ReadCheckpoint(ctx, tx, projector.DefaultName)
	if err != nil && !errors.Is(err, projector.ErrNotFound) {
		return out, err
	}
	out.Checkpoint = cp.StreamSeq
	rows, err := tx.Query(ctx, `SELECT id FROM workspaces WHERE ($1 = '' OR status = $1) AND id > $2 ORDER BY id LIMIT $3`,
		string(o.Status), o.After, o.Limit+1)
	if err != nil {
		return out, fmt.Errorf("list workspaces: %w", err)
	}
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return out, fmt.Errorf("list workspaces: %w", err)
		}
		ids = append(ids, id)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return out, fmt.Errorf("list workspaces: %w", err)
	}
	if len(ids) > o.Limit {
		ids = ids[:o.Limit]
		out.Next = ids[len(ids)-1]
	}
	for _, id := range ids {
		w, err := projector.GetWorkspace(ctx, tx, id)
		if err != nil {
			return out, err
		}
		out.Workspaces = append(out.Workspaces, fromReadModel(w))
	}
	return out, nil
}

func (s *Server) get(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if err := fsm.ValidateID(id); err != nil {
		s.writeError(w, r, badField("id", err.Error()))
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
	ws, err := GetWorkspace(r.Context(), s.cfg.Pool, s.cfg.Store, id)
	if errors.Is(err, ErrNoWorkspace) {
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
	q := r.URL.Query()
	var o ListOptions
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
		if err != nil || n < 1 || n > 1000 {
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
	list, err := ListWorkspaces(r.Context(), s.cfg.Pool, o)
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
