package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/read"
)

// "What is it waiting for?" (issue 14 item 5): the action in flight, the
// commands queued behind it and the commands allowed now, read from the
// streams (the source of truth), not the read model.

// DefaultEngineDurable is the engine's durable consumer name unless serve
// is configured otherwise.
const DefaultEngineDurable = events.DefaultEngineDurable

// maxQueuedScan bounds how many commands of one workspace explain reads
// past the engine's ack floor.
const maxQueuedScan = 1000

// Explanation is GET /v1/workspaces/{id}/explain's body.
type Explanation struct {
	Workspace  string `json:"workspace"`
	State      string `json:"state"`
	Generation uint64 `json:"generation"`
	// EventSeq is the newest event's sequence: what the explanation is
	// current to.
	EventSeq  uint64 `json:"event_seq"`
	LastError string `json:"last_error,omitempty"`
	// InFlight is the asynchronous action under way, nil when none.
	InFlight *Action `json:"in_flight"`
	// Queued are the user commands published for the workspace that the
	// engine has not decided yet, oldest first.
	Queued []QueuedCommand `json:"queued"`
	// Allowed are the user commands that would be accepted (or be no-ops)
	// in the current state.
	Allowed []fsm.CommandType `json:"allowed"`
}

// Action is an attempt under way: it ends with a report of the provisioner
// (or, past Deadline, with a deadline_exceeded failure).
type Action struct {
	// Kind is "provision", "stop" or "delete".
	Kind       string    `json:"kind"`
	Generation uint64    `json:"generation"`
	Started    time.Time `json:"started"`
	// Deadline is when the supervisor fails it, if it is still under way;
	// absent when the server was given no deadline for it.
	Deadline *time.Time `json:"deadline,omitempty"`
	// Cause is what started it.
	Cause Cause `json:"cause"`
}

// QueuedCommand is a command in the command stream without an outcome.
type QueuedCommand struct {
	CommandID string          `json:"command_id"`
	Type      fsm.CommandType `json:"type"`
	Actor     string          `json:"actor,omitempty"`
	// UnprovenActor, in Actor's stead, is an actor that reads as the HTTP
	// API's ("api:<token>") on a command without the API's proof
	// (events.ActorProofHeader): anyone who may publish commands on NATS
	// can write one, and the engine will refuse the command. It is kept
	// out of Actor so that no reader of Actor takes it for a token
	// holder's. Explain without the actor key (the CLI's direct path)
	// proves no API actor.
	UnprovenActor string    `json:"unproven_actor,omitempty"`
	QueuedAt      time.Time `json:"queued_at"`
	StreamSeq     uint64    `json:"stream_seq"`
}

// ExplainOptions say what explain cannot read from the streams.
type ExplainOptions struct {
	// Durable is the engine's consumer on the command stream; "" means
	// DefaultEngineDurable.
	Durable string
	// Deadlines are serve's per in-flight state.
	Deadlines map[fsm.Status]time.Duration
	// ActorKey is the installation's actor key, which proves the API's
	// actors of queued commands; without it none is proven
	// (QueuedCommand.UnprovenActor).
	ActorKey []byte
}

// Explain says what workspace id is waiting for. It returns an error
// matching ErrNoWorkspace when the workspace has no events.
func Explain(ctx context.Context, store *events.Store, id string, o ExplainOptions) (Explanation, error) {
	if o.Durable == "" {
		o.Durable = DefaultEngineDurable
	}
	var (
		last  *events.Envelope
		start *events.Envelope // the event that began the current generation
	)
	err := store.History(ctx, id, func(env events.Envelope) error {
		if last == nil || env.Generation != last.Generation {
			start = &env
		}
		last = &env
		return nil
	})
	if err != nil {
		return Explanation{}, err
	}
	if last == nil {
		return Explanation{}, ErrNoWorkspace
	}
	st := last.State
	x := Explanation{Workspace: id, State: st.Status.String(), Generation: st.Generation, EventSeq: st.Seq,
		LastError: st.LastError, Queued: []QueuedCommand{}, Allowed: fsm.Allowed(st)}
	if st.Status.InFlight() {
		a := &Action{Kind: actionKind(st.Status), Generation: st.Generation, Started: start.Time, Cause: read.CauseOf(*start)}
		if d, ok := o.Deadlines[st.Status]; ok && d > 0 {
			dl := start.Time.Add(d)
			a.Deadline = &dl
		}
		x.InFlight = a
	}
	x.Queued, err = queued(ctx, store, id, o.Durable, o.ActorKey)
	if err != nil {
		return Explanation{}, err
	}
	return x, nil
}

func actionKind(st fsm.Status) string {
	switch st {
	case fsm.Provisioning:
		return "provision"
	case fsm.Stopping:
		return "stop"
	case fsm.Deleting:
		return "delete"
	}
	return ""
}

// queued lists workspace id's commands after the engine consumer's ack
// floor that have no outcome, as the engine finds its unfinished ones
// (engine/recover.go): everything below the floor was decided.
func queued(ctx context.Context, store *events.Store, id, durable string, actorKey []byte) ([]QueuedCommand, error) {
	pending, err := store.PendingCommands(ctx, id, durable, maxQueuedScan, actorKey)
	if err != nil {
		return nil, fmt.Errorf("explain %s: %w", id, err)
	}
	out := make([]QueuedCommand, 0, len(pending))
	for _, p := range pending {
		q := QueuedCommand{CommandID: p.Command.ID, Type: p.Command.Type, Actor: p.Command.Actor, QueuedAt: p.Time, StreamSeq: p.StreamSeq}
		if p.ActorUnproven {
			q.Actor, q.UnprovenActor = "", p.Command.Actor
		}
		out = append(out, q)
	}
	return out, nil
}

func (s *Server) explain(w http.ResponseWriter, r *http.Request) {
	id, ok := s.pathID(w, r)
	if !ok {
		return
	}
	if err := onlyParams(r); err != nil {
		s.writeError(w, r, err)
		return
	}
	x, err := Explain(r.Context(), s.cfg.Store, id, ExplainOptions{Durable: s.cfg.EngineDurable, Deadlines: s.cfg.Deadlines,
		ActorKey: s.cfg.Client.ActorKey()})
	if errors.Is(err, ErrNoWorkspace) {
		writeNotFound(w, id)
		return
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, x)
}
