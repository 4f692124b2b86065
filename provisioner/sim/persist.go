package sim

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/turnstile-dev/turnstile/internal/atomicfile"
	"github.com/turnstile-dev/turnstile/provisioner"
)

// stateVersion is the format of the state file; a file of another version
// is refused, never guessed at.
const stateVersion = 1

// hostState is the state file: what a Docker Engine would still have after
// the process that drives it restarts.
type hostState struct {
	Version    int              `json:"version"`
	Seq        uint64           `json:"seq"`
	Containers []containerState `json:"containers"`
	Volumes    []volumeState    `json:"volumes"`
}

type containerState struct {
	ID           string    `json:"id"`
	Workspace    string    `json:"workspace"`
	Generation   uint64    `json:"generation"`
	Installation string    `json:"installation"`
	Image        string    `json:"image"`
	Profile      string    `json:"profile,omitempty"`
	State        string    `json:"state"`
	ExitCode     int       `json:"exit_code"`
	ReadyAt      time.Time `json:"ready_at"`
	ExitAt       time.Time `json:"exit_at,omitzero"`
	ExitPlanCode int       `json:"exit_plan_code,omitempty"`
}

type volumeState struct {
	Name         string `json:"name"`
	Workspace    string `json:"workspace"`
	Installation string `json:"installation"`
}

// OpenHost returns a simulated engine whose containers and volumes persist
// in the JSON file at path, so that they outlive the process as a Docker
// Engine's outlive serve: the file is loaded if it exists and replaced
// atomically (internal/atomicfile) before any change is reported. A
// container whose planned exit (AGENT_EXIT_AFTER) passed while nothing ran
// is found exited, as it would be on a real engine. log gets the failures
// of writes no caller waits for (a planned exit); nil means slog.Default().
func OpenHost(cfg HostConfig, path string, log *slog.Logger) (*Host, error) {
	if path == "" {
		return nil, errors.New("sim host: the state file path is empty")
	}
	if log == nil {
		log = slog.Default()
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("sim host: %w", err)
	}
	h := NewHost(cfg)
	h.path, h.log = path, log
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return h, nil
	case err != nil:
		return nil, fmt.Errorf("sim host: %w", err)
	}
	var st hostState
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("sim host: state file %s is not valid JSON (%w): remove it to start with an empty simulated engine", path, err)
	}
	if st.Version != stateVersion {
		return nil, fmt.Errorf("sim host: state file %s has version %d, this build reads version %d: remove it to start with an empty simulated engine", path, st.Version, stateVersion)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.seq = st.Seq
	now := time.Now()
	for _, cs := range st.Containers {
		name := provisioner.ContainerName(cs.Workspace)
		if cs.ID == "" || cs.Workspace == "" || h.containers[name] != nil {
			return nil, fmt.Errorf("sim host: state file %s: container %q of workspace %q is missing an id or listed twice", path, cs.ID, cs.Workspace)
		}
		c := &simContainer{id: cs.ID, workspace: cs.Workspace, generation: cs.Generation, installation: cs.Installation,
			image: cs.Image, profile: cs.Profile, state: cs.State, exitCode: cs.ExitCode, readyAt: cs.ReadyAt,
			exitAt: cs.ExitAt, exitPlanCode: cs.ExitPlanCode}
		h.containers[name] = c
		if c.state == "running" && !c.exitAt.IsZero() {
			if !now.Before(c.exitAt) {
				c.state, c.exitCode = "exited", c.exitPlanCode // exited while nobody watched
			} else {
				h.armExitLocked(c, c.exitAt.Sub(now), c.exitPlanCode)
			}
		}
	}
	for _, vs := range st.Volumes {
		h.volumes[vs.Name] = simVolume{workspace: vs.Workspace, installation: vs.Installation}
	}
	return h, nil
}

// saveLocked writes the state file, if the host has one. Call it with h.mu
// held, after a change and before the change is reported, so that the file
// is never behind what a caller was told.
func (h *Host) saveLocked() error {
	if h.path == "" {
		return nil
	}
	st := hostState{Version: stateVersion, Seq: h.seq, Containers: []containerState{}, Volumes: []volumeState{}}
	for _, c := range h.containers {
		st.Containers = append(st.Containers, containerState{ID: c.id, Workspace: c.workspace, Generation: c.generation,
			Installation: c.installation, Image: c.image, Profile: c.profile, State: c.state, ExitCode: c.exitCode,
			ReadyAt: c.readyAt, ExitAt: c.exitAt, ExitPlanCode: c.exitPlanCode})
	}
	for name, v := range h.volumes {
		st.Volumes = append(st.Volumes, volumeState{Name: name, Workspace: v.workspace, Installation: v.installation})
	}
	b, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("sim host: encode state: %w", err)
	}
	if err := atomicfile.Write(h.path, b, 0o600); err != nil {
		return fmt.Errorf("sim host: save state: %w", err)
	}
	return nil
}
