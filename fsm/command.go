package fsm

// CommandType names a command on the wire.
type CommandType string

// User commands.
const (
	Create    CommandType = "create"
	Start     CommandType = "start"
	Stop      CommandType = "stop"
	Restart   CommandType = "restart"
	Delete    CommandType = "delete"
	Configure CommandType = "configure"
)

// System commands: outcomes of asynchronous work, each for one generation.
const (
	ProvisionSucceeded CommandType = "provision_succeeded"
	ProvisionFailed    CommandType = "provision_failed"
	StopSucceeded      CommandType = "stop_succeeded"
	StopFailed         CommandType = "stop_failed"
	DeleteSucceeded    CommandType = "delete_succeeded"
	DeleteFailed       CommandType = "delete_failed"
	ContainerExited    CommandType = "container_exited"
	DeadlineExceeded   CommandType = "deadline_exceeded"
)

// UserCommands lists the commands people send, in a stable order.
func UserCommands() []CommandType {
	return []CommandType{Create, Start, Stop, Restart, Delete, Configure}
}

// SystemCommands lists the outcomes the provisioner, watcher and sweeper send.
func SystemCommands() []CommandType {
	return []CommandType{ProvisionSucceeded, ProvisionFailed, StopSucceeded, StopFailed,
		DeleteSucceeded, DeleteFailed, ContainerExited, DeadlineExceeded}
}

// IsSystem reports whether t is an outcome of asynchronous work.
func (t CommandType) IsSystem() bool {
	for _, s := range SystemCommands() {
		if s == t {
			return true
		}
	}
	return false
}

// Known reports whether t is a command this lifecycle understands.
func (t CommandType) Known() bool {
	if t.IsSystem() {
		return true
	}
	for _, u := range UserCommands() {
		if u == t {
			return true
		}
	}
	return false
}

// Command asks for a change to one workspace.
type Command struct {
	// ID identifies the command and is its idempotency key.
	ID        string      `json:"id"`
	Type      CommandType `json:"type"`
	Workspace string      `json:"workspace"`
	Actor     string      `json:"actor,omitempty"`
	// Spec is the desired spec of create (optional) and configure (required).
	Spec *Spec `json:"spec,omitempty"`
	// Generation is the attempt a system command reports on.
	Generation uint64 `json:"generation,omitempty"`
	// Reason says why a system outcome failed; it reaches the read model.
	Reason string `json:"reason,omitempty"`
	// ExitCode is the container's exit code for container_exited.
	ExitCode *int `json:"exit_code,omitempty"`
	// ContainerID names the container a provision_succeeded brought up.
	ContainerID string `json:"container_id,omitempty"`
}
