package fsm

// EventType is an event's stable name on the wire. Never derive it from a Go
// type name: a rename would change history.
type EventType string

// The events a decision can produce.
const (
	Created            EventType = "workspace.created"
	StartRequested     EventType = "workspace.start_requested"
	StopRequested      EventType = "workspace.stop_requested"
	RestartRequested   EventType = "workspace.restart_requested"
	DeleteRequested    EventType = "workspace.delete_requested"
	Configured         EventType = "workspace.configured"
	Provisioned        EventType = "workspace.provisioned"
	ReprovisionStarted EventType = "workspace.reprovision_started"
	ProvisionFailedEv  EventType = "workspace.provision_failed"
	StoppedEv          EventType = "workspace.stopped"
	StopFailedEv       EventType = "workspace.stop_failed"
	DeletedEv          EventType = "workspace.deleted"
	DeleteFailedEv     EventType = "workspace.delete_failed"
	ContainerExitedEv  EventType = "workspace.container_exited"
	DeadlineExceededEv EventType = "workspace.deadline_exceeded"
)

// EventTypes lists every event type.
func EventTypes() []EventType {
	return []EventType{Created, StartRequested, StopRequested, RestartRequested, DeleteRequested,
		Configured, Provisioned, ReprovisionStarted, ProvisionFailedEv, StoppedEv, StopFailedEv,
		DeletedEv, DeleteFailedEv, ContainerExitedEv, DeadlineExceededEv}
}

// Known reports whether t is an event type of this lifecycle.
func (t EventType) Known() bool {
	for _, e := range EventTypes() {
		if e == t {
			return true
		}
	}
	return false
}

// Event is what an accepted command records. Apply folds it into a state.
type Event struct {
	Type EventType `json:"type"`
	// Generation is the workspace's generation after the event.
	Generation uint64 `json:"generation"`
	// SpecVersion is the workspace's spec version after the event.
	SpecVersion uint64 `json:"spec_version"`
	// Spec is set when the event brings a new spec (created, configured).
	Spec *Spec `json:"spec,omitempty"`
	// Reason explains failures and follow-up attempts.
	Reason   string `json:"reason,omitempty"`
	ExitCode *int   `json:"exit_code,omitempty"`
	// ContainerID is the container a provisioned event brought up.
	ContainerID string `json:"container_id,omitempty"`
}
