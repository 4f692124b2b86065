package fsm

import (
	"errors"
	"fmt"
)

// Code classifies why a command was refused. The set is closed: the API maps
// each to an HTTP status, the client back to a Code, the CLI to an exit code.
type Code string

// Rejection codes.
const (
	CodeNotFound Code = "not_found" // the workspace does not exist
	CodeExists   Code = "exists"    // create of a workspace that exists
	CodeBusy     Code = "busy"      // an attempt is in flight; wait, then retry
	CodeGone     Code = "gone"      // the workspace is deleted or being deleted
	CodeInvalid  Code = "invalid"   // the command itself is malformed
)

// Rejection is a refused command: typed, with the state it was refused in and
// what would be accepted now.
type Rejection struct {
	Code        Code          `json:"code"`
	Command     CommandType   `json:"command"`
	State       Status        `json:"state"`
	Generation  uint64        `json:"generation"`
	SpecVersion uint64        `json:"spec_version"`
	Allowed     []CommandType `json:"allowed"`
	Message     string        `json:"message"`
}

func (r *Rejection) Error() string { return fmt.Sprintf("%s: %s", r.Code, r.Message) }

// RejectionCode returns the code of a *Rejection in err's chain, or "".
func RejectionCode(err error) Code {
	var r *Rejection
	if errors.As(err, &r) {
		return r.Code
	}
	return ""
}

// Invalid builds a rejection for a malformed command, before any state is known.
func Invalid(cmd CommandType, format string, args ...any) *Rejection {
	return &Rejection{Code: CodeInvalid, Command: cmd, Allowed: []CommandType{}, Message: fmt.Sprintf(format, args...)}
}
