package api

import (
	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/fsm"
)

// CommandResult is what became of one command: the HTTP API's answer to an
// accepted or no-op command, and the CLI's -o json output.
type CommandResult struct {
	CommandID string          `json:"command_id"`
	Workspace string          `json:"workspace"`
	Command   fsm.CommandType `json:"command"`
	// Outcome is accepted (an event was recorded), noop (already so),
	// rejected or stale.
	Outcome fsm.Outcome `json:"outcome"`
	// State and Generation are the workspace's after the command.
	State      string `json:"state"`
	Generation uint64 `json:"generation"`
	// EventSeq is the workspace's event the command recorded (accepted).
	EventSeq  uint64         `json:"event_seq,omitempty"`
	Reason    string         `json:"reason,omitempty"`
	Rejection *fsm.Rejection `json:"rejection,omitempty"`
	// Wait is set when the caller also waited for the steady state.
	Wait *WaitResult `json:"wait,omitempty"`
}

// ResultOf turns a stored outcome into a CommandResult.
func ResultOf(o events.OutcomeRecord) CommandResult {
	return CommandResult{CommandID: o.CommandID, Workspace: o.Workspace, Command: o.CommandType, Outcome: o.Outcome,
		State: o.State.String(), Generation: o.Generation, EventSeq: o.EventSeq, Reason: o.Reason, Rejection: o.Rejection}
}

// Target is the steady state a workspace in st is heading for: running
// after provisioning, stopped after stopping, deleted after deleting. A
// steady state is its own target.
func Target(st fsm.Status) fsm.Status {
	switch st {
	case fsm.Provisioning:
		return fsm.Running
	case fsm.Stopping:
		return fsm.Stopped
	case fsm.Deleting:
		return fsm.Deleted
	}
	return st
}
