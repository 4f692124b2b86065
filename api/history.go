package api

import "github.com/turnstile-dev/turnstile/read"

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
