package read

import (
	"context"
	"errors"
	"fmt"
	"time"

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

// WorkspaceList is one page of workspaces (GET /v1/workspaces's body).
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
func GetWorkspace(ctx context.Context, q projector.Querier, store *events.Store, id string) (Workspace, error) {
	head, err := store.Load(ctx, id)
	if err != nil {
		return Workspace{}, err
	}
	rm, err := projector.GetWorkspace(ctx, q, id)
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

// Page sizes of ListWorkspaces.
const (
	DefaultListLimit = 100
	MaxListLimit     = 1000
)

// ListOptions filter and page a list.
type ListOptions struct {
	Status fsm.Status // "" for every status
	After  string     // ids after this one
	Limit  int        // 0 means DefaultListLimit; at most MaxListLimit
}

// ListWorkspaces reads one page of workspaces from the read model, ordered
// by id, and the checkpoint they reflect, in one statement.
func ListWorkspaces(ctx context.Context, q projector.RowsQuerier, o ListOptions) (WorkspaceList, error) {
	if o.Limit <= 0 {
		o.Limit = DefaultListLimit
	}
	o.Limit = min(o.Limit, MaxListLimit)
	// One row more than the page tells whether there is a next one.
	page, err := projector.ListWorkspaces(ctx, q, o.Status, o.After, o.Limit+1)
	if err != nil {
		return WorkspaceList{Workspaces: []Workspace{}}, err
	}
	out := WorkspaceList{Workspaces: make([]Workspace, 0, min(len(page.Workspaces), o.Limit)), Checkpoint: page.Checkpoint}
	rows := page.Workspaces
	if len(rows) > o.Limit {
		rows = rows[:o.Limit]
		out.Next = rows[len(rows)-1].ID
	}
	for _, w := range rows {
		out.Workspaces = append(out.Workspaces, fromReadModel(w))
	}
	return out, nil
}

// CountByStatus counts the read model's workspaces in each state; every
// state but fsm.None is present, at 0 when none is in it.
func CountByStatus(ctx context.Context, q projector.RowsQuerier) (map[fsm.Status]int64, error) {
	got, err := projector.CountByStatus(ctx, q)
	if err != nil {
		return nil, err
	}
	out := map[fsm.Status]int64{}
	for _, st := range fsm.Statuses() {
		if st != fsm.None {
			out[st] = got[st]
		}
	}
	return out, nil
}
