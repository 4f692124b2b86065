package api

import (
	"context"

	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/read"
)

// The views of package read that the API answers with, under the names
// its clients and docs know.
type (
	// Workspace is GET /v1/workspaces/{id}'s body.
	Workspace = read.Workspace
	// WorkspaceList is GET /v1/workspaces's body.
	WorkspaceList = read.WorkspaceList
	// Event is one event of a timeline or a stream.
	Event = read.Event
	// Cause says why an event happened.
	Cause = read.Cause
)

// Where a Workspace was read from.
const (
	SourceReadModel  = read.SourceReadModel
	SourceEventStore = read.SourceEventStore
)

// ErrNoWorkspace is read.ErrNoWorkspace.
var ErrNoWorkspace = read.ErrNoWorkspace

// EventIn describes env, looking up in store the state it moved the
// workspace from: an event as GET /v1/events shows it, and as webhook
// deliveries carry it.
func EventIn(ctx context.Context, store *events.Store, env events.Envelope) (Event, error) {
	from := fsm.None
	if env.Seq > 1 {
		var err error
		if from, err = statusBefore(ctx, store, env); err != nil {
			return Event{}, err
		}
	}
	return read.EventOf(env, from), nil
}
