package fsm

import "maps"

// Status is a workspace's lifecycle state. The zero value means the workspace
// has never existed.
type Status string

// The lifecycle states of DESIGN.md.
const (
	None         Status = ""
	Provisioning Status = "provisioning"
	Running      Status = "running"
	Stopping     Status = "stopping"
	Stopped      Status = "stopped"
	Failed       Status = "failed"
	Deleting     Status = "deleting"
	Deleted      Status = "deleted"
)

// Statuses lists every state a workspace can be in, None included.
func Statuses() []Status {
	return []Status{None, Provisioning, Running, Stopping, Stopped, Failed, Deleting, Deleted}
}

// Known reports whether s is one of Statuses: a decoder of stored events
// refuses any other.
func (s Status) Known() bool {
	switch s {
	case None, Provisioning, Running, Stopping, Stopped, Failed, Deleting, Deleted:
		return true
	}
	return false
}

// String names the status; None reads as "none".
func (s Status) String() string {
	if s == None {
		return "none"
	}
	return string(s)
}

// Live reports whether the workspace exists and is not on its way out.
func (s Status) Live() bool {
	switch s {
	case Provisioning, Running, Stopping, Stopped, Failed:
		return true
	}
	return false
}

// InFlight reports whether an asynchronous action is under way in this state,
// so a deadline applies to it.
func (s Status) InFlight() bool {
	return s == Provisioning || s == Stopping || s == Deleting
}

// ParseStatus turns a wire name back into a Status.
func ParseStatus(s string) (Status, bool) {
	if s == "none" {
		return None, true
	}
	for _, st := range Statuses() {
		if st != None && string(st) == s {
			return st, true
		}
	}
	return None, false
}

// Spec is what a workspace should run. The zero Spec means "the provisioner's
// default image, limits and security profile".
type Spec struct {
	Image       string            `json:"image,omitempty"`
	Env         map[string]string `json:"env,omitempty"`
	CPUs        float64           `json:"cpus,omitempty"`
	MemoryBytes int64             `json:"memory_bytes,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	// Profile names the security profile the container runs with; empty
	// means the provisioner's default. Which names exist and which a spec
	// may ask for is the provisioner's policy, not the lifecycle's.
	Profile string `json:"profile,omitempty"`
}

// Equal reports whether two specs ask for the same thing.
func (s Spec) Equal(o Spec) bool {
	return s.Image == o.Image && s.CPUs == o.CPUs && s.MemoryBytes == o.MemoryBytes &&
		s.Profile == o.Profile && maps.Equal(s.Env, o.Env) && maps.Equal(s.Labels, o.Labels)
}

// Clone returns a deep copy, so states never share maps.
func (s Spec) Clone() Spec {
	s.Env = maps.Clone(s.Env)
	s.Labels = maps.Clone(s.Labels)
	return s
}

// Workspace is the state of one workspace: what every event produces and what
// every decision is made against.
type Workspace struct {
	ID     string `json:"id"`
	Status Status `json:"status"`
	// Generation numbers attempts: every provisioning, stop and delete gets a
	// new one, and every asynchronous outcome names the one it belongs to.
	Generation uint64 `json:"generation"`
	// SpecVersion counts specs; Spec is the newest.
	SpecVersion uint64 `json:"spec_version"`
	Spec        Spec   `json:"spec"`
	// AttemptSpecVersion is the spec version the latest provisioning attempt
	// runs with. When it is behind SpecVersion while provisioning, a
	// follow-up attempt is owed (configure coalescing).
	AttemptSpecVersion uint64 `json:"attempt_spec_version"`
	// ContainerID is the container of the latest successful attempt; it is
	// cleared by delete.
	ContainerID string `json:"container_id,omitempty"`
	// LastError is the reason of the latest failure; it stays after recovery
	// so that a read model can show what last went wrong.
	LastError string `json:"last_error,omitempty"`
	// Seq is the number of events in the workspace's history.
	Seq uint64 `json:"seq"`
}

// Exists reports whether the workspace has ever been created.
func (w Workspace) Exists() bool { return w.Status != None }

// PendingSpec reports whether a newer spec waits for the next attempt.
func (w Workspace) PendingSpec() bool { return w.SpecVersion > w.AttemptSpecVersion }
