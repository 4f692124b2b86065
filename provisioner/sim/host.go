package sim

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/turnstile-dev/turnstile/provisioner"
)

// HostConfig configures a simulated engine.
type HostConfig struct {
	// Images lists the images the engine has; nil means it has every image.
	Images []string
}

// Host is a simulated container engine. Provisioners of several
// installations may share one, as they would share a Docker host. It is
// safe for concurrent use.
type Host struct {
	mu         sync.Mutex
	images     map[string]bool // nil: every image exists
	containers map[string]*simContainer
	volumes    map[string]simVolume // by volume name
	subs       map[*subscriber]struct{}
	seq        uint64
	path       string       // the state file; "" keeps everything in memory (NewHost)
	log        *slog.Logger // set with path
}

// simVolume is one workspace volume on the host, keyed by its name.
type simVolume struct {
	workspace    string
	installation string
}

// simContainer is one container on the host, keyed by its name.
type simContainer struct {
	id           string
	workspace    string
	generation   uint64
	installation string
	image        string
	profile      string // the security profile it was made with
	state        string // created, running, exited
	exitCode     int
	readyAt      time.Time
	exitAt       time.Time // zero: never exits on its own
	exitPlanCode int
	timer        *time.Timer
}

// NewHost returns an empty simulated engine that lives in memory only; see
// OpenHost for one that outlives the process.
func NewHost(cfg HostConfig) *Host {
	h := &Host{containers: map[string]*simContainer{}, volumes: map[string]simVolume{}, subs: map[*subscriber]struct{}{}}
	if cfg.Images != nil {
		h.images = map[string]bool{}
		for _, i := range cfg.Images {
			h.images[i] = true
		}
	}
	return h
}

func (h *Host) hasImage(image string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.images == nil || h.images[image]
}

// Kill makes the workspace's container exit with code, as a crash or
// "docker kill" would, whichever installation owns it. It fails with
// provisioner.ErrNotFound when there is no running container.
func (h *Host) Kill(workspace string, code int) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	c := h.containers[provisioner.ContainerName(workspace)]
	if c == nil || c.state != "running" {
		return fmt.Errorf("no running container %s: %w", provisioner.ContainerName(workspace), provisioner.ErrNotFound)
	}
	h.exitLocked(c, code, "")
	return h.saveLocked()
}

// Remove removes the workspace's container as "docker rm -f" would: it
// exits (code 137) if it runs, then vanishes. The volume stays. It fails
// with provisioner.ErrNotFound when there is no container.
func (h *Host) Remove(workspace string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	c := h.containers[provisioner.ContainerName(workspace)]
	if c == nil {
		return fmt.Errorf("no container %s: %w", provisioner.ContainerName(workspace), provisioner.ErrNotFound)
	}
	h.removeLocked(c, 137)
	return h.saveLocked()
}

// Profile returns the security profile the workspace's container was
// made with, as the docker backend labels it (turnstile.profile); "" when
// there is no container.
func (h *Host) Profile(workspace string) string {
	h.mu.Lock()
	defer h.mu.Unlock()
	if c := h.containers[provisioner.ContainerName(workspace)]; c != nil {
		return c.profile
	}
	return ""
}

// VolumeExists reports whether the workspace's volume exists.
func (h *Host) VolumeExists(workspace string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	_, ok := h.volumes[provisioner.VolumeName(workspace)]
	return ok
}

func (h *Host) newIDLocked() string {
	h.seq++
	sum := sha256.Sum256(fmt.Appendf(nil, "sim-container-%d", h.seq))
	return hex.EncodeToString(sum[:])
}

// startLocked runs c: ready after startDelay, exiting after exitAfter (nil:
// never) with exitCode.
func (h *Host) startLocked(c *simContainer, startDelay time.Duration, exitAfter *time.Duration, exitCode int) {
	now := time.Now()
	c.state, c.exitCode = "running", 0
	c.readyAt, c.exitAt, c.exitPlanCode = now.Add(startDelay), time.Time{}, exitCode
	if exitAfter == nil {
		return
	}
	if *exitAfter <= 0 {
		h.exitLocked(c, exitCode, "")
		return
	}
	c.exitAt = now.Add(*exitAfter)
	h.armExitLocked(c, *exitAfter, exitCode)
}

// armExitLocked makes the running c exit with exitCode after d.
func (h *Host) armExitLocked(c *simContainer, d time.Duration, exitCode int) {
	id := c.id
	name := provisioner.ContainerName(c.workspace)
	c.timer = time.AfterFunc(d, func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		if cur := h.containers[name]; cur != nil && cur.id == id && cur.state == "running" {
			h.exitLocked(cur, exitCode, "")
			if err := h.saveLocked(); err != nil {
				// The exit is reported regardless; after a restart the
				// file's exit_at finds the container exited all the same.
				h.log.Error("sim host: planned exit not saved", "workspace", cur.workspace, "err", err)
			}
		}
	})
}

// exitLocked marks c exited with code and reports it.
func (h *Host) exitLocked(c *simContainer, code int, reason string) {
	if c.timer != nil {
		c.timer.Stop()
		c.timer = nil
	}
	c.state, c.exitCode = "exited", code
	h.emitLocked(c, provisioner.Exit{ExitCode: &code, Reason: reason})
}

// removeLocked removes c, first exiting it with code if it runs.
func (h *Host) removeLocked(c *simContainer, code int) {
	if c.state == "running" {
		h.exitLocked(c, code, "")
	}
	delete(h.containers, provisioner.ContainerName(c.workspace))
	h.emitLocked(c, provisioner.Exit{Removed: true, Reason: "container removed"})
}

func (h *Host) emitLocked(c *simContainer, e provisioner.Exit) {
	e.Workspace, e.Generation, e.ContainerID, e.At = c.workspace, c.generation, c.id, time.Now()
	for s := range h.subs {
		if s.installation == c.installation {
			s.queue = append(s.queue, e)
			select {
			case s.wake <- struct{}{}:
			default:
			}
		}
	}
}

func (c *simContainer) instance() provisioner.Instance {
	return provisioner.Instance{
		Workspace: c.workspace, Generation: c.generation, ContainerID: c.id, Image: c.image,
		State: c.state, Running: c.state == "running", ExitCode: c.exitCode,
	}
}

// subscriber is one Watch: exits queue up unboundedly so that the host
// never blocks on a slow reader.
type subscriber struct {
	installation string
	queue        []provisioner.Exit // guarded by Host.mu
	wake         chan struct{}
}
