package events

import "strings"

// DefaultPrefix is the subject prefix when none is configured.
const DefaultPrefix = "turnstile"

// Names derives subjects and stream names from a prefix, so that two
// installations can share one NATS account.
type Names struct{ Prefix string }

// NewNames returns the names for prefix ("" means DefaultPrefix).
func NewNames(prefix string) Names {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	return Names{Prefix: prefix}
}

// CommandStream holds every command: <prefix>.cmd.<workspace>.
func (n Names) CommandStream() string { return strings.ToUpper(n.Prefix) + "_COMMANDS" }

// SystemStream holds the reports of Turnstile's own provisioner, supervisor
// and watcher: <prefix>.sys.<workspace>. It is a stream of its own because
// JetStream's Nats-Msg-Id dedupe window is per stream: a user command
// published under a report's id must never make the report a "duplicate".
func (n Names) SystemStream() string { return strings.ToUpper(n.Prefix) + "_SYSTEM" }

// EventStream holds events (<prefix>.evt.<workspace>) and command outcomes
// (<prefix>.out.<command id>) in one ordered log.
func (n Names) EventStream() string { return strings.ToUpper(n.Prefix) + "_EVENTS" }

// Command is the subject commands of workspace id are published on.
func (n Names) Command(id string) string { return n.Prefix + ".cmd." + id }

// Commands matches every command subject.
func (n Names) Commands() string { return n.Prefix + ".cmd.>" }

// System is the subject system reports on workspace id are published on.
func (n Names) System(id string) string { return n.Prefix + ".sys." + id }

// Systems matches every system report subject.
func (n Names) Systems() string { return n.Prefix + ".sys.>" }

// IsSystem reports whether subject is a system report subject.
func (n Names) IsSystem(subject string) bool { return strings.HasPrefix(subject, n.Prefix+".sys.") }

// Event is the subject of workspace id's events.
func (n Names) Event(id string) string { return n.Prefix + ".evt." + id }

// Events matches every event subject.
func (n Names) Events() string { return n.Prefix + ".evt.>" }

// Outcome is the subject of command id's outcome.
func (n Names) Outcome(commandID string) string { return n.Prefix + ".out." + commandID }

// Outcomes matches every outcome subject.
func (n Names) Outcomes() string { return n.Prefix + ".out.>" }

// WorkspaceOf extracts the workspace id from an event, command or system
// report subject.
func (n Names) WorkspaceOf(subject string) string {
	if i := strings.LastIndexByte(subject, '.'); i >= 0 {
		return subject[i+1:]
	}
	return subject
}

// IsEvent reports whether subject is an event subject (not an outcome).
func (n Names) IsEvent(subject string) bool { return strings.HasPrefix(subject, n.Prefix+".evt.") }
