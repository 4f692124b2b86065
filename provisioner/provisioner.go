package provisioner

import (
	"context"
	"time"

	"github.com/turnstile-dev/turnstile/fsm"
)

// Names and labels on the container engine. They are part of the contract
// with operators (docker ps, docker volume ls): never change them.
const (
	LabelWorkspace    = "turnstile.workspace"
	LabelGeneration   = "turnstile.generation"
	LabelInstallation = "turnstile.installation"

	// DataPath is where the workspace's volume is mounted in its container.
	DataPath = "/data"
)

// ContainerName is the name of workspace's container: ws-<id>.
func ContainerName(workspace string) string { return "ws-" + workspace }

// VolumeName is the name of workspace's volume: ws-<id>-data.
func VolumeName(workspace string) string { return "ws-" + workspace + "-data" }

// Provisioner runs one container per workspace. Implementations are safe for
// concurrent use by multiple goroutines, as long as calls for the same
// workspace do not overlap.
type Provisioner interface {
	// Provision makes req.Workspace's container run req.Spec at
	// req.Generation: it adopts a container of that generation, replaces one
	// of an older generation and creates one if there is none. It returns
	// when the container runs (and, where the image has a health check, is
	// healthy). Errors are *Error: CodeInvalid, CodeImageNotFound,
	// CodeNameTaken, CodeSuperseded, CodeExited, CodeUnhealthy, CodeCanceled
	// (wrapping ctx.Err()) or CodeEngine.
	Provision(ctx context.Context, req Request) (Result, error)

	// Stop stops the workspace's container if its generation is at most
	// generation (the stop's own generation), gracefully: SIGTERM, then
	// SIGKILL after a timeout. The stopped container stays (for its exit
	// code and logs) until a newer generation or Delete removes it. No
	// container, one that already stopped, or one of another installation
	// (left alone) is success. A container of a newer generation is left
	// running and Stop fails with CodeSuperseded.
	Stop(ctx context.Context, workspace string, generation uint64) error

	// Delete removes the workspace's container (if its generation is at
	// most generation) and its volume. Anything already gone is success, and
	// so is a container or volume of another installation, which is left
	// alone. A container of a newer generation is left alone too, and
	// Delete fails with CodeSuperseded.
	Delete(ctx context.Context, workspace string, generation uint64) error

	// Inspect describes the workspace's container. It returns an error
	// matching ErrNotFound when this installation has none.
	Inspect(ctx context.Context, workspace string) (Instance, error)

	// List describes every container this installation owns, in no
	// particular order.
	List(ctx context.Context) ([]Instance, error)

	// ListVolumes describes every workspace volume this installation owns
	// (labelled with its installation id), with or without a container, in
	// no particular order. Volumes of other installations, and unlabelled
	// ones, are not listed.
	ListVolumes(ctx context.Context) ([]VolumeInfo, error)

	// RemoveVolume removes the workspace's volume unless a container (of
	// any generation, running or not) still uses it, and never touches a
	// container: it is for volumes left behind by workspaces that no longer
	// exist. A volume in use fails with CodeEngine and the engine's
	// message; one already gone, or of another installation (left alone),
	// is success.
	RemoveVolume(ctx context.Context, workspace string) error

	// Watch reports exits and removals of this installation's containers
	// from now on, until ctx is done; then the channel is closed. It fails
	// at once if the engine cannot be reached. Exits that happen while
	// nobody watches are not replayed: compare List with the expected state
	// to find them.
	Watch(ctx context.Context) (<-chan Exit, error)
}

// Request asks for a workspace's container at one generation.
type Request struct {
	Workspace  string
	Generation uint64
	// Spec is what to run; an empty Image means the provisioner's default.
	Spec fsm.Spec
	// Redact keeps the secret values resolved into Spec out of reasons: a
	// provisioner passes anything the container or the engine said (its
	// output, a health check's) through it before it goes into a reason,
	// which ends in events, logs and webhooks.
	Redact Redactor
}

// Result describes the container Provision left running.
type Result struct {
	ContainerID string
	// Image is the image the container runs (the default if the spec had none).
	Image string
	// Adopted is true when a container of this generation already existed.
	Adopted bool
}

// Instance describes one container of this installation.
type Instance struct {
	Workspace   string
	Generation  uint64
	ContainerID string
	Image       string
	// State is the engine's word for it: created, running, exited, dead, ...
	State   string
	Running bool
	// ExitCode is the last exit code; meaningful when the container ran and
	// is not running.
	ExitCode int
}

// VolumeInfo describes one workspace volume of this installation.
type VolumeInfo struct {
	Workspace string
	// Name is the engine's name for it: ws-<id>-data.
	Name string
}

// Exit reports that a container exited or was removed.
type Exit struct {
	Workspace   string
	Generation  uint64
	ContainerID string
	// Removed is true when the container is gone (removed by anyone), false
	// when it exited and still exists. Removing a running container reports
	// its exit first, then its removal.
	Removed bool
	// ExitCode is set for exits, nil for removals.
	ExitCode *int
	// Reason says what happened, for people: "exited with code 137 (out of memory)".
	Reason string
	At     time.Time
}
