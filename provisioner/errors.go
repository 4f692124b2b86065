package provisioner

import (
	"context"
	"errors"
	"fmt"
	"regexp"

	"github.com/turnstile-dev/turnstile/fsm"
)

// ErrNotFound means this installation has no container for the workspace.
var ErrNotFound = errors.New("not found")

// Code classifies a failed action so that callers can branch on it. The set
// is closed.
type Code string

// Failure codes.
const (
	// CodeInvalid: the request itself is malformed (bad id, generation 0,
	// no image and no default).
	CodeInvalid Code = "invalid"
	// CodeImageNotFound: the image is not on the engine and is not pulled.
	CodeImageNotFound Code = "image_not_found"
	// CodeNameTaken: the container or volume name belongs to another
	// installation or to something Turnstile does not manage.
	CodeNameTaken Code = "name_taken"
	// CodeNotAllowed: the operator's policy refuses the spec (an image
	// outside --allowed-images, a profile outside --allowed-profiles, a
	// limit above the maximum); nothing was touched.
	CodeNotAllowed Code = "not_allowed"
	// CodeSuperseded: a newer generation's container exists; the request is
	// stale and nothing was touched.
	CodeSuperseded Code = "superseded"
	// CodeExited: the container exited before it became ready.
	CodeExited Code = "exited"
	// CodeUnhealthy: the image's health check reported unhealthy.
	CodeUnhealthy Code = "unhealthy"
	// CodeCanceled: the context ended first; the error wraps ctx.Err().
	CodeCanceled Code = "canceled"
	// CodeEngine: any other failure of the container engine; Reason carries
	// the engine's own message.
	CodeEngine Code = "engine"
)

// Permanent reports whether repeating the same request cannot succeed until
// something outside Turnstile changes (an image is built, a name freed,
// the policy or the spec changed).
func (c Code) Permanent() bool {
	switch c {
	case CodeInvalid, CodeNotAllowed, CodeImageNotFound, CodeNameTaken, CodeSuperseded:
		return true
	}
	return false
}

// Error is a failed action of a Provisioner.
type Error struct {
	Op         string // provision, stop, delete, remove volume, inspect, list, watch
	Workspace  string
	Generation uint64
	Code       Code
	// Reason is the human-readable cause, meant for the workspace's failure
	// reason: "image not found: foo:1: build it locally or pass another --image".
	Reason string
	// Err is the underlying error, if any.
	Err error
}

func (e *Error) Error() string {
	if e.Workspace == "" {
		return fmt.Sprintf("%s: %s", e.Op, e.Reason)
	}
	return fmt.Sprintf("%s %s (generation %d): %s", e.Op, e.Workspace, e.Generation, e.Reason)
}

func (e *Error) Unwrap() error { return e.Err }

// Permanent reports whether retrying the same request is pointless.
func (e *Error) Permanent() bool { return e.Code.Permanent() }

// CodeOf returns the Code of an *Error in err's chain, CodeCanceled for a
// bare context error, and CodeEngine for anything else non-nil.
func CodeOf(err error) Code {
	var e *Error
	switch {
	case err == nil:
		return ""
	case errors.As(err, &e):
		return e.Code
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return CodeCanceled
	}
	return CodeEngine
}

// ReasonOf returns the human-readable reason of err: an *Error's Reason, or
// err's text.
func ReasonOf(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	if err == nil {
		return ""
	}
	return err.Error()
}

var installationPattern = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// ValidateInstallation checks an installation id: a DNS label, like
// workspace ids, so it is safe in label values and log lines.
func ValidateInstallation(id string) error {
	if !installationPattern.MatchString(id) {
		return fmt.Errorf("installation id %q is not a DNS label: use 1-63 characters of a-z, 0-9 and '-', starting and ending with a letter or digit", id)
	}
	return nil
}

// Validate checks the workspace id and generation of an action; backends
// call it before touching anything. It returns a *Error with CodeInvalid.
func Validate(op, workspace string, generation uint64) error {
	if err := fsm.ValidateID(workspace); err != nil {
		return &Error{Op: op, Workspace: workspace, Generation: generation, Code: CodeInvalid, Reason: err.Error(), Err: err}
	}
	if generation == 0 {
		return &Error{Op: op, Workspace: workspace, Code: CodeInvalid, Reason: "generation 0 is not an attempt: generations start at 1"}
	}
	return nil
}

// Canceled wraps a context error as a *Error with CodeCanceled;
// errors.Is(err, context.Canceled) (or DeadlineExceeded) still holds.
func Canceled(op, workspace string, generation uint64, ctxErr error) *Error {
	return &Error{Op: op, Workspace: workspace, Generation: generation, Code: CodeCanceled,
		Reason: fmt.Sprintf("%s was abandoned: %v", op, ctxErr), Err: ctxErr}
}

// NameTaken is the CodeNameTaken failure for a container or volume name
// that belongs to owner ("" when it carries no installation label).
func NameTaken(op, workspace string, generation uint64, kind, name, owner string) *Error {
	who := fmt.Sprintf("installation %s", owner)
	if owner == "" {
		who = "something Turnstile does not manage (no " + LabelInstallation + " label)"
	}
	return &Error{Op: op, Workspace: workspace, Generation: generation, Code: CodeNameTaken,
		Reason: fmt.Sprintf("%s name %s is taken by %s: remove or rename it, or use another workspace id", kind, name, who)}
}

// Superseded is the CodeSuperseded failure when a container of a newer
// generation exists.
func Superseded(op, workspace string, generation, newer uint64) *Error {
	return &Error{Op: op, Workspace: workspace, Generation: generation, Code: CodeSuperseded,
		Reason: fmt.Sprintf("container %s already belongs to generation %d, newer than %d: this %s is stale and changed nothing",
			ContainerName(workspace), newer, generation, op)}
}

// ImageNotFound is the CodeImageNotFound failure for image.
func ImageNotFound(op, workspace string, generation uint64, image string, err error) *Error {
	return &Error{Op: op, Workspace: workspace, Generation: generation, Code: CodeImageNotFound,
		Reason: fmt.Sprintf("image not found: %s: build it locally or pass another --image", image), Err: err}
}
