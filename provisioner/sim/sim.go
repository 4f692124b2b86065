package sim

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/internal/agent"
	"github.com/turnstile-dev/turnstile/internal/retry"
	"github.com/turnstile-dev/turnstile/provisioner"
)

// Config configures a simulated Provisioner.
type Config struct {
	// Host is the simulated engine; nil gives the provisioner a private one,
	// kept in StateFile if that is set.
	Host *Host
	// StateFile, with no Host, keeps the private engine's containers and
	// volumes in this JSON file so that they outlive the process (see
	// OpenHost); "" keeps them in memory only.
	StateFile string
	// Installation is this installation's id. Required; a DNS label.
	Installation string
	// DefaultImage runs when a spec names no image.
	DefaultImage string
	// Policy is what a spec may ask for, judged exactly as the docker
	// backend judges it; the zero Policy is the strict default.
	Policy provisioner.Policy
	// MinLatency and MaxLatency bound the simulated time each Provision,
	// Stop and Delete takes (uniformly drawn).
	MinLatency, MaxLatency time.Duration
	// FailureRate is the fraction (0 to 1) of Provision calls that fail
	// with a transient CodeEngine error.
	FailureRate float64
	// Seed seeds the latency and failure draws.
	Seed uint64
	// Logger gets the simulator warning and one line per change. Default
	// slog.Default().
	Logger *slog.Logger
}

// Validate reports what is wrong with c.
func (c Config) Validate() error {
	if err := provisioner.ValidateInstallation(c.Installation); err != nil {
		return fmt.Errorf("sim provisioner: %w", err)
	}
	if err := c.Policy.Validate(); err != nil {
		return fmt.Errorf("sim provisioner: policy: %w", err)
	}
	if c.MinLatency < 0 || c.MaxLatency < c.MinLatency {
		return fmt.Errorf("sim provisioner: latency range [%v, %v] is invalid", c.MinLatency, c.MaxLatency)
	}
	if c.Host != nil && c.StateFile != "" {
		return fmt.Errorf("sim provisioner: give a Host or a StateFile, not both (a shared Host is opened with OpenHost)")
	}
	if c.FailureRate < 0 || c.FailureRate > 1 {
		return fmt.Errorf("sim provisioner: failure rate %v is not in [0, 1]", c.FailureRate)
	}
	return nil
}

// Provisioner is the simulated provisioner of one installation.
type Provisioner struct {
	cfg  Config
	host *Host
	log  *slog.Logger

	mu  sync.Mutex // guards rng
	rng *rand.Rand
}

var _ provisioner.Provisioner = (*Provisioner)(nil)

// New returns a simulated Provisioner and logs, as a warning, that it is
// one. It starts nothing.
func New(cfg Config) (*Provisioner, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	switch {
	case cfg.Host != nil:
	case cfg.StateFile != "":
		h, err := OpenHost(HostConfig{}, cfg.StateFile, cfg.Logger)
		if err != nil {
			return nil, err
		}
		cfg.Host = h
	default:
		cfg.Host = NewHost(HostConfig{})
	}
	p := &Provisioner{
		cfg: cfg, host: cfg.Host,
		log: cfg.Logger.With("provisioner", "sim", "installation", cfg.Installation),
		rng: rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15)),
	}
	p.log.Warn("SIMULATED provisioner: no containers run; use it for development and load tests only",
		"min_latency", cfg.MinLatency, "max_latency", cfg.MaxLatency, "failure_rate", cfg.FailureRate, "seed", cfg.Seed)
	return p, nil
}

// Host returns the simulated engine, for its test hooks.
func (p *Provisioner) Host() *Host { return p.host }

// delay waits a drawn latency, or until ctx ends.
func (p *Provisioner) delay(ctx context.Context) error {
	p.mu.Lock()
	d := p.cfg.MinLatency
	if span := p.cfg.MaxLatency - p.cfg.MinLatency; span > 0 {
		d += time.Duration(p.rng.Int64N(int64(span) + 1))
	}
	p.mu.Unlock()
	return sleep(ctx, d)
}

// sleep waits d (simulated work, not synchronisation), or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	return retry.Sleep(ctx, d)
}

func (p *Provisioner) fails() bool {
	if p.cfg.FailureRate <= 0 {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.rng.Float64() < p.cfg.FailureRate
}

// agentPlan reads the agent's knobs from env as the agent would; values it
// would refuse make it exit at once with code 2, as the agent does.
func agentPlan(env map[string]string) (startDelay time.Duration, exitAfter *time.Duration, exitCode int) {
	cfg, err := agent.ConfigFromEnv(func(k string) string { return env[k] })
	if err != nil {
		zero := time.Duration(0)
		return 0, &zero, 2
	}
	return cfg.StartDelay, cfg.ExitAfter, cfg.ExitCode
}

// Provision simulates creating (or adopting) and starting the container;
// see provisioner.Provisioner.
func (p *Provisioner) Provision(ctx context.Context, req provisioner.Request) (provisioner.Result, error) {
	const op = "provision"
	ws, gen := req.Workspace, req.Generation
	fail := func(code provisioner.Code, reason string) error {
		return &provisioner.Error{Op: op, Workspace: ws, Generation: gen, Code: code, Reason: reason}
	}
	if err := provisioner.Validate(op, ws, gen); err != nil {
		return provisioner.Result{}, err
	}
	plan, err := p.cfg.Policy.Plan(op, req, p.cfg.DefaultImage)
	if err != nil {
		return provisioner.Result{}, err
	}
	image := plan.Image
	if !p.host.hasImage(image) {
		return provisioner.Result{}, provisioner.ImageNotFound(op, ws, gen, image, nil)
	}
	if err := p.delay(ctx); err != nil {
		return provisioner.Result{}, provisioner.Canceled(op, ws, gen, err)
	}
	if p.fails() {
		return provisioner.Result{}, fail(provisioner.CodeEngine, fmt.Sprintf("simulated engine failure (sim failure rate %v)", p.cfg.FailureRate))
	}
	startDelay, exitAfter, exitCode := agentPlan(req.Spec.Env)
	name := provisioner.ContainerName(ws)

	h := p.host
	h.mu.Lock()
	c := h.containers[name]
	if c != nil {
		switch {
		case c.installation != p.cfg.Installation:
			h.mu.Unlock()
			return provisioner.Result{}, provisioner.NameTaken(op, ws, gen, "container", name, c.installation)
		case c.generation > gen:
			h.mu.Unlock()
			return provisioner.Result{}, provisioner.Superseded(op, ws, gen, c.generation)
		case c.generation < gen:
			p.log.Info("replacing container of an older generation", "workspace", ws, "generation", gen, "old_generation", c.generation)
			h.removeLocked(c, 0)
			c = nil
		}
	}
	adopted := c != nil
	if c == nil {
		vol := provisioner.VolumeName(ws)
		if v, ok := h.volumes[vol]; ok && v.installation != p.cfg.Installation {
			h.mu.Unlock()
			return provisioner.Result{}, provisioner.NameTaken(op, ws, gen, "volume", vol, v.installation)
		}
		h.volumes[vol] = simVolume{workspace: ws, installation: p.cfg.Installation}
		c = &simContainer{id: h.newIDLocked(), workspace: ws, generation: gen, installation: p.cfg.Installation, image: image,
			profile: plan.Profile.Name, state: "created"}
		h.containers[name] = c
	}
	if c.state != "running" {
		h.startLocked(c, startDelay, exitAfter, exitCode)
	}
	if err := h.saveLocked(); err != nil {
		h.mu.Unlock()
		return provisioner.Result{}, &provisioner.Error{Op: op, Workspace: ws, Generation: gen, Code: provisioner.CodeEngine, Reason: err.Error(), Err: err}
	}
	id, wake := c.id, c.readyAt
	if !c.exitAt.IsZero() && c.exitAt.Before(wake) {
		wake = c.exitAt
	}
	h.mu.Unlock()
	p.log.Info("started container", "workspace", ws, "generation", gen, "container", id, "adopted", adopted)

	if err := sleep(ctx, time.Until(wake)); err != nil {
		p.abandon(ws, gen, id)
		return provisioner.Result{}, provisioner.Canceled(op, ws, gen, err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	c = h.containers[name]
	switch {
	case c == nil || c.id != id:
		return provisioner.Result{}, fail(provisioner.CodeEngine, fmt.Sprintf("container %s vanished while starting: was it removed by someone else?", name))
	case c.state == "running" && !c.exitAt.IsZero() && !time.Now().Before(c.exitAt):
		h.exitLocked(c, c.exitPlanCode, "") // the exit timer is about to fire
		if err := h.saveLocked(); err != nil {
			return provisioner.Result{}, &provisioner.Error{Op: op, Workspace: ws, Generation: gen, Code: provisioner.CodeEngine, Reason: err.Error(), Err: err}
		}
	}
	if c.state != "running" {
		return provisioner.Result{}, fail(provisioner.CodeExited, fmt.Sprintf("container %s exited with code %d before it was ready", name, c.exitCode))
	}
	return provisioner.Result{ContainerID: id, Image: image, Adopted: adopted}, nil
}

// abandon removes the container a cancelled Provision started.
func (p *Provisioner) abandon(ws string, gen uint64, id string) {
	h := p.host
	h.mu.Lock()
	defer h.mu.Unlock()
	if c := h.containers[provisioner.ContainerName(ws)]; c != nil && c.id == id && c.generation == gen {
		h.removeLocked(c, 137)
		p.log.Info("abandoned provision: removed its container", "workspace", ws, "generation", gen, "container", id)
		if err := h.saveLocked(); err != nil {
			// The next Provision of the workspace replaces or adopts it.
			p.log.Error("abandoned provision not saved", "workspace", ws, "err", err)
		}
	}
}

// own returns the workspace's container for a stop or delete of gen; nil
// when there is none of this installation's. Call with h.mu held.
func (p *Provisioner) ownLocked(op, ws string, gen uint64) (*simContainer, error) {
	c := p.host.containers[provisioner.ContainerName(ws)]
	switch {
	case c == nil:
		return nil, nil
	case c.installation != p.cfg.Installation:
		p.log.Warn("container belongs to another installation; left alone", "workspace", ws, "owner", c.installation, "op", op)
		return nil, nil
	case c.generation > gen:
		return nil, provisioner.Superseded(op, ws, gen, c.generation)
	}
	return c, nil
}

// Stop simulates a graceful stop (exit code 0); see provisioner.Provisioner.
func (p *Provisioner) Stop(ctx context.Context, workspace string, generation uint64) error {
	const op = "stop"
	if err := provisioner.Validate(op, workspace, generation); err != nil {
		return err
	}
	if err := p.delay(ctx); err != nil {
		return provisioner.Canceled(op, workspace, generation, err)
	}
	p.host.mu.Lock()
	defer p.host.mu.Unlock()
	c, err := p.ownLocked(op, workspace, generation)
	if c == nil || err != nil {
		return err
	}
	if c.state == "running" {
		p.host.exitLocked(c, 0, "")
		p.log.Info("stopped container", "workspace", workspace, "generation", generation, "container", c.id)
		if err := p.host.saveLocked(); err != nil {
			return &provisioner.Error{Op: op, Workspace: workspace, Generation: generation, Code: provisioner.CodeEngine, Reason: err.Error(), Err: err}
		}
	}
	return nil
}

// Delete simulates removing the container and the volume; see
// provisioner.Provisioner.
func (p *Provisioner) Delete(ctx context.Context, workspace string, generation uint64) error {
	const op = "delete"
	if err := provisioner.Validate(op, workspace, generation); err != nil {
		return err
	}
	if err := p.delay(ctx); err != nil {
		return provisioner.Canceled(op, workspace, generation, err)
	}
	h := p.host
	h.mu.Lock()
	defer h.mu.Unlock()
	c, err := p.ownLocked(op, workspace, generation)
	if err != nil {
		return err
	}
	if c != nil {
		h.removeLocked(c, 0)
		p.log.Info("removed container", "workspace", workspace, "generation", generation, "container", c.id)
	}
	vol := provisioner.VolumeName(workspace)
	if v, ok := h.volumes[vol]; ok && v.installation == p.cfg.Installation {
		delete(h.volumes, vol)
	}
	if err := h.saveLocked(); err != nil {
		return &provisioner.Error{Op: op, Workspace: workspace, Generation: generation, Code: provisioner.CodeEngine, Reason: err.Error(), Err: err}
	}
	return nil
}

// RemoveVolume removes the workspace's volume unless its container exists;
// see provisioner.Provisioner.
func (p *Provisioner) RemoveVolume(_ context.Context, workspace string) error {
	const op = "remove volume"
	if err := fsm.ValidateID(workspace); err != nil {
		return &provisioner.Error{Op: op, Workspace: workspace, Code: provisioner.CodeInvalid, Reason: err.Error(), Err: err}
	}
	h := p.host
	h.mu.Lock()
	defer h.mu.Unlock()
	vol := provisioner.VolumeName(workspace)
	v, ok := h.volumes[vol]
	if !ok || v.installation != p.cfg.Installation {
		return nil
	}
	// Only this installation's container can mount this installation's volume.
	if c := h.containers[provisioner.ContainerName(workspace)]; c != nil && c.installation == p.cfg.Installation {
		return &provisioner.Error{Op: op, Workspace: workspace, Code: provisioner.CodeEngine,
			Reason: fmt.Sprintf("remove volume %s: volume is in use by container %s (simulated)", vol, c.id)}
	}
	delete(h.volumes, vol)
	p.log.Info("removed volume", "workspace", workspace, "volume", vol)
	if err := h.saveLocked(); err != nil {
		return &provisioner.Error{Op: op, Workspace: workspace, Code: provisioner.CodeEngine, Reason: err.Error(), Err: err}
	}
	return nil
}

// Inspect describes the workspace's container; see provisioner.Provisioner.
func (p *Provisioner) Inspect(_ context.Context, workspace string) (provisioner.Instance, error) {
	if err := fsm.ValidateID(workspace); err != nil {
		return provisioner.Instance{}, &provisioner.Error{Op: "inspect", Workspace: workspace, Code: provisioner.CodeInvalid, Reason: err.Error(), Err: err}
	}
	p.host.mu.Lock()
	defer p.host.mu.Unlock()
	name := provisioner.ContainerName(workspace)
	c := p.host.containers[name]
	if c == nil || c.installation != p.cfg.Installation {
		return provisioner.Instance{}, fmt.Errorf("container %s: %w", name, provisioner.ErrNotFound)
	}
	return c.instance(), nil
}

// List describes this installation's containers.
func (p *Provisioner) List(context.Context) ([]provisioner.Instance, error) {
	p.host.mu.Lock()
	defer p.host.mu.Unlock()
	out := []provisioner.Instance{}
	for _, c := range p.host.containers {
		if c.installation == p.cfg.Installation {
			out = append(out, c.instance())
		}
	}
	return out, nil
}

// ListVolumes describes this installation's volumes.
func (p *Provisioner) ListVolumes(context.Context) ([]provisioner.VolumeInfo, error) {
	p.host.mu.Lock()
	defer p.host.mu.Unlock()
	out := []provisioner.VolumeInfo{}
	for name, v := range p.host.volumes {
		if v.installation == p.cfg.Installation {
			out = append(out, provisioner.VolumeInfo{Workspace: v.workspace, Name: name})
		}
	}
	return out, nil
}

// Watch reports this installation's exits and removals until ctx ends.
func (p *Provisioner) Watch(ctx context.Context) (<-chan provisioner.Exit, error) {
	if err := ctx.Err(); err != nil {
		return nil, provisioner.Canceled("watch", "", 0, err)
	}
	s := &subscriber{installation: p.cfg.Installation, wake: make(chan struct{}, 1)}
	h := p.host
	h.mu.Lock()
	h.subs[s] = struct{}{}
	h.mu.Unlock()
	out := make(chan provisioner.Exit)
	go func() {
		defer close(out)
		defer func() {
			h.mu.Lock()
			delete(h.subs, s)
			h.mu.Unlock()
		}()
		for {
			h.mu.Lock()
			batch := s.queue
			s.queue = nil
			h.mu.Unlock()
			for _, e := range batch {
				select {
				case out <- e:
				case <-ctx.Done():
					return
				}
			}
			select {
			case <-ctx.Done():
				return
			case <-s.wake:
			}
		}
	}()
	return out, nil
}
