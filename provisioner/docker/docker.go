package docker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/client"

	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/provisioner"
)

// Config configures a Provisioner.
type Config struct {
	// Client talks to the engine (see Connect). Required.
	Client client.APIClient
	// Installation is this installation's id, written to every label and
	// compared before every action. Required; a DNS label.
	Installation string
	// DefaultImage runs when a spec names no image.
	DefaultImage string
	// Policy is what a spec may ask for (images, security profile,
	// limits) and the limits it gets when it asks for none; the zero
	// Policy is the strict default (see provisioner.Policy).
	Policy provisioner.Policy
	// StopTimeout is how long a container gets after SIGTERM before
	// SIGKILL. Default 10s.
	StopTimeout time.Duration
	// PollInterval is how often a removal in progress elsewhere, or a
	// container name changing hands, is looked at again. Default 100ms.
	PollInterval time.Duration
	// ReadyPoll is how often Provision looks at a starting container when
	// the engine's event stream reports nothing about it; it normally wakes
	// on the container's health, exit and removal events. Default 1s.
	ReadyPoll time.Duration
	// CleanupTimeout bounds the removal a cancelled Provision does after its
	// context ended. Default 30s.
	CleanupTimeout time.Duration
	// Logger receives one line per change made to the engine. Default
	// slog.Default().
	Logger *slog.Logger
}

func (c *Config) setDefaults() {
	if c.StopTimeout <= 0 {
		c.StopTimeout = 10 * time.Second
	}
	if c.PollInterval <= 0 {
		c.PollInterval = 100 * time.Millisecond
	}
	if c.ReadyPoll <= 0 {
		c.ReadyPoll = time.Second
	}
	if c.CleanupTimeout <= 0 {
		c.CleanupTimeout = 30 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Validate reports what is wrong with c.
func (c Config) Validate() error {
	if c.Client == nil {
		return errors.New("docker provisioner: Config.Client is required")
	}
	if err := provisioner.ValidateInstallation(c.Installation); err != nil {
		return fmt.Errorf("docker provisioner: %w", err)
	}
	if c.DefaultImage != "" {
		if err := fsm.ValidateSpec(fsm.Spec{Image: c.DefaultImage}); err != nil {
			return fmt.Errorf("docker provisioner: default image: %w", err)
		}
	}
	if err := c.Policy.Validate(); err != nil {
		return fmt.Errorf("docker provisioner: policy: %w", err)
	}
	return nil
}

// Provisioner runs workspaces as Docker containers. It holds no state of
// its own: everything is read back from the engine's labels.
type Provisioner struct {
	cfg Config
	cli client.APIClient
	log *slog.Logger
}

var _ provisioner.Provisioner = (*Provisioner)(nil)

// New returns a Provisioner. It starts nothing and does not contact the
// engine.
func New(cfg Config) (*Provisioner, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	return &Provisioner{cfg: cfg, cli: cfg.Client, log: cfg.Logger.With("provisioner", "docker", "installation", cfg.Installation)}, nil
}

// Connect opens a client for the engine the environment names
// (DOCKER_HOST, DOCKER_CERT_PATH, ...), negotiates the API version and
// checks that the engine answers.
func Connect(ctx context.Context) (*client.Client, error) {
	cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		return nil, fmt.Errorf("docker client: %w", err)
	}
	if _, err := cli.Ping(ctx); err != nil {
		_ = cli.Close()
		return nil, fmt.Errorf("cannot reach Docker at %s (is dockerd running, is DOCKER_HOST right?): %w", cli.DaemonHost(), err)
	}
	return cli, nil
}

// Inspect describes the workspace's container, or fails with an error
// matching provisioner.ErrNotFound when this installation has none.
func (p *Provisioner) Inspect(ctx context.Context, workspace string) (provisioner.Instance, error) {
	if err := fsm.ValidateID(workspace); err != nil {
		return provisioner.Instance{}, &provisioner.Error{Op: "inspect", Workspace: workspace, Code: provisioner.CodeInvalid, Reason: err.Error(), Err: err}
	}
	name := provisioner.ContainerName(workspace)
	c, err := p.cli.ContainerInspect(ctx, name)
	if err != nil {
		if isNotFound(err) {
			return provisioner.Instance{}, fmt.Errorf("container %s: %w", name, provisioner.ErrNotFound)
		}
		return provisioner.Instance{}, p.engineError(ctx, "inspect", workspace, 0, "inspect container "+name, err)
	}
	if owner := ownerOf(c); owner != p.cfg.Installation {
		return provisioner.Instance{}, fmt.Errorf("container %s belongs to installation %q, not %q: %w",
			name, owner, p.cfg.Installation, provisioner.ErrNotFound)
	}
	return instanceOf(c), nil
}

// List describes every container labelled with this installation.
func (p *Provisioner) List(ctx context.Context) ([]provisioner.Instance, error) {
	cs, err := p.cli.ContainerList(ctx, container.ListOptions{
		All:     true,
		Filters: filters.NewArgs(filters.Arg("label", provisioner.LabelInstallation+"="+p.cfg.Installation)),
	})
	if err != nil {
		return nil, p.engineError(ctx, "list", "", 0, "list containers", err)
	}
	out := make([]provisioner.Instance, 0, len(cs))
	for _, c := range cs {
		ws := c.Labels[provisioner.LabelWorkspace]
		if ws == "" {
			p.log.Warn("container carries this installation's label but no workspace label; ignored", "container", c.ID)
			continue
		}
		in := provisioner.Instance{
			Workspace: ws, Generation: generationOf(c.Labels), ContainerID: c.ID,
			Image: c.Image, State: c.State, Running: c.State == container.StateRunning,
		}
		if c.State == container.StateExited || c.State == container.StateDead {
			// The summary carries the exit code only as text; ask for it.
			full, err := p.cli.ContainerInspect(ctx, c.ID)
			switch {
			case isNotFound(err):
				continue // removed meanwhile
			case err != nil:
				return nil, p.engineError(ctx, "list", ws, in.Generation, "inspect container "+c.ID, err)
			}
			in = instanceOf(full)
		}
		out = append(out, in)
	}
	return out, nil
}

func ownerOf(c container.InspectResponse) string {
	if c.Config == nil {
		return ""
	}
	return c.Config.Labels[provisioner.LabelInstallation]
}

// generationOf reads the generation label; a missing or mangled one reads
// as 0, older than any attempt, so that the next action replaces it.
func generationOf(labels map[string]string) uint64 {
	g, err := strconv.ParseUint(labels[provisioner.LabelGeneration], 10, 64)
	if err != nil {
		return 0
	}
	return g
}

func instanceOf(c container.InspectResponse) provisioner.Instance {
	in := provisioner.Instance{ContainerID: c.ID}
	if c.Config != nil {
		in.Workspace = c.Config.Labels[provisioner.LabelWorkspace]
		in.Generation = generationOf(c.Config.Labels)
		in.Image = c.Config.Image
	}
	if c.ContainerJSONBase != nil && c.State != nil {
		in.State = c.State.Status
		in.Running = c.State.Running
		in.ExitCode = c.State.ExitCode
	}
	return in
}
