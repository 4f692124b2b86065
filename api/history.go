package api

import (
	"context"
	"time"

	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/fsm"
)

// Event is one entry of a workspace's timeline, read from the stream.
type Event struct {
	Time      time.Time `json:"time"`
	Workspace string    `json:"workspace"`
	// Seq is the event's place in the workspace's history (from 1);
	// StreamSeq its place in the whole stream.
	Seq         uint64        `json:"seq"`
	StreamSeq   uint64        `json:"stream_seq"`
	Generation  uint64        `json:"generation"`
	SpecVersion uint64        `json:"spec_version"`
	Type        fsm.EventType `json:"type"`
	From        string        `json:"from"`
	To          string        `json:"to"`
	Actor       string        `json:"actor,omitempty"`
	CommandID   string        `json:"command_id"`
	Reason      string        `json:"reason,omitempty"`
	ExitCode    *int          `json:"exit_code,omitempty"`
	Spec        *fsm.Spec     `json:"spec,omitempty"`
	// Cause is why it happened: a user's command, a system report or a
	// deadline.
	Cause Cause `json:"cause"`
}

// EventOf describes env, which moved the workspace from the state from.
func EventOf(env events.Envelope, from fsm.Status) Event {
	return Event{Time: env.Time, Workspace: env.Workspace, Seq: env.Seq, StreamSeq: env.StreamSeq, Generation: env.Generation,
		SpecVersion: env.SpecVersion, Type: env.Type, From: from.String(), To: env.State.Status.String(),
		Actor: env.Actor, CommandID: env.CommandID, Reason: env.Payload.Reason, ExitCode: env.Payload.ExitCode,
		Spec: env.Payload.Spec, Cause: CauseOf(env)}
}

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
	return EventOf(env, from), nil
}

// History reads workspace id's timeline from the event stream, oldest
// first. It returns an error matching ErrNoWorkspace when the workspace has
// no events.
func History(ctx context.Context, store *events.Store, id string) ([]Event, error) {
	out := []Event{}
	prev := fsm.None
	err := store.History(ctx, id, func(env events.Envelope) error {
		out = append(out, EventOf(env, prev))
		prev = env.State.Status
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, ErrNoWorkspace
	}
	return out, nil
}
