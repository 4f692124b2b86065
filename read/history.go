package read

import (
	"context"
	"errors"
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

// Cause says why an event happened, as the envelope records it: the
// command that produced it (derived from the event's type) and its actor.
type Cause struct {
	// Kind is "user" for a command a person or program sent (Actor is
	// "api:<token name>" over HTTP, the CLI's or client's actor over
	// NATS), "system" for a report of serve's own parts (Actor: worker,
	// supervisor, watcher or reconciler), "deadline" for an in-flight
	// action that outlived its deadline (sent by the supervisor).
	Kind    string          `json:"kind"`
	Command fsm.CommandType `json:"command"`
	Actor   string          `json:"actor,omitempty"`
}

// CauseOf derives the cause of env.
func CauseOf(env events.Envelope) Cause {
	cmd := fsm.CommandFor(env.Event(), env.Generation)
	c := Cause{Kind: "user", Command: cmd.Type, Actor: env.Actor}
	switch {
	case cmd.Type == fsm.DeadlineExceeded:
		c.Kind = "deadline"
	case cmd.Type.IsSystem():
		c.Kind = "system"
	}
	return c
}

// EventOf describes env, which moved the workspace from the state from.
func EventOf(env events.Envelope, from fsm.Status) Event {
	return Event{Time: env.Time, Workspace: env.Workspace, Seq: env.Seq, StreamSeq: env.StreamSeq, Generation: env.Generation,
		SpecVersion: env.SpecVersion, Type: env.Type, From: from.String(), To: env.State.Status.String(),
		Actor: env.Actor, CommandID: env.CommandID, Reason: env.Payload.Reason, ExitCode: env.Payload.ExitCode,
		Spec: env.Payload.Spec, Cause: CauseOf(env)}
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

// HistoryPage reads at most limit events of workspace id's timeline after
// its event seq after, oldest first; more says whether later events
// follow. The read starts at event after (events.Store.HistoryAfter finds
// it with a few direct gets), whose state is the first event's From, so a
// page of a long history costs about a page, in memory and in reads. It
// returns an error matching ErrNoWorkspace when the workspace has no
// events.
func HistoryPage(ctx context.Context, store *events.Store, id string, after uint64, limit int) (page []Event, more bool, err error) {
	page = []Event{}
	prev, seen := fsm.None, false
	// limit+1: one more than the page shows that more follow.
	err = store.HistoryAfter(ctx, id, after, limit+1, func(env events.Envelope) error {
		seen = true
		from := prev
		prev = env.State.Status
		if env.Seq <= after {
			return nil
		}
		if len(page) == limit {
			more = true
			return errPageFull
		}
		page = append(page, EventOf(env, from))
		return nil
	})
	if err != nil && !errors.Is(err, errPageFull) {
		return nil, false, err
	}
	if !seen {
		return nil, false, ErrNoWorkspace
	}
	return page, more, nil
}

// errPageFull stops a history read once a page is full and one more
// event shows that more follow.
var errPageFull = errors.New("page full")
