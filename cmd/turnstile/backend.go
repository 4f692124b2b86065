package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/turnstile-dev/turnstile/engine"
	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/provisioner"
	"github.com/turnstile-dev/turnstile/provisioner/docker"
	"github.com/turnstile-dev/turnstile/provisioner/sim"
	"github.com/turnstile-dev/turnstile/status"
)

// Provisioner kinds, as /readyz and the banner name them.
const (
	kindDocker = "docker"
	kindSim    = "sim"
)

// simDefaultImage is what the simulator reports running when a spec names
// no image.
const simDefaultImage = "turnstile-agent:sim"

// backend is the provisioner serve runs.
type backend struct {
	kind string
	prov provisioner.Provisioner
	// why explains the choice (auto falling back to sim says why).
	why string
	// image is the default workspace image; note says how it came to be.
	image, imageNote string
	// policy is what specs may ask for (serve's flags).
	policy provisioner.Policy
	// identity names the container engine, the same for every client of
	// it ("docker <daemon ID>"; the simulator's, this process's own, "sim
	// <state file>@<host>": status.SimProvisioner), and hint describes it
	// for people. Every serve announces them in its engine's member
	// entry: the serves of an installation must share one.
	identity, hint string
	closeFn        func()
}

// admitFunc decides whether serve may provision on the container engine
// identity (described by hint), before anything is done on it.
type admitFunc func(ctx context.Context, identity, hint string) error

// chooseBackend builds the provisioner --provisioner asks for: docker,
// sim, or auto (docker when it answers, else sim). admit is asked first,
// before anything is done on the container engine.
func chooseBackend(ctx context.Context, c serveConfig, installation, dataDir string, log *slog.Logger, admit admitFunc) (*backend, error) {
	policy, err := c.policy()
	if err != nil {
		return nil, err
	}
	b, err := openBackend(ctx, c, policy, installation, dataDir, log, admit)
	if err != nil {
		return nil, err
	}
	b.policy = policy
	return b, nil
}

func openBackend(ctx context.Context, c serveConfig, policy provisioner.Policy, installation, dataDir string, log *slog.Logger, admit admitFunc) (*backend, error) {
	if c.provisioner == kindSim {
		return newSim(ctx, c, policy, installation, dataDir, log, admit, "chosen with --provisioner sim")
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	cli, err := docker.Connect(pctx)
	cancel()
	if err != nil {
		if c.provisioner == kindDocker {
			return nil, fmt.Errorf("--provisioner docker: %w", err)
		}
		return newSim(ctx, c, policy, installation, dataDir, log, admit, fmt.Sprintf("--provisioner auto: Docker is unreachable (%v)", err))
	}
	b := &backend{kind: kindDocker, why: "Docker at " + cli.DaemonHost(), closeFn: func() { _ = cli.Close() }}
	// The daemon's ID is its own, whatever address reaches it.
	ictx, cancel := context.WithTimeout(ctx, 10*time.Second)
	info, err := cli.Info(ictx)
	cancel()
	if err != nil {
		b.closeFn()
		return nil, fmt.Errorf("read the ID of the Docker engine at %s: %w", cli.DaemonHost(), err)
	}
	b.identity, b.hint = status.DockerProvisioner(info.ID), fmt.Sprintf("daemon %s at %s", info.Name, cli.DaemonHost())
	if err := admit(ctx, b.identity, b.hint); err != nil {
		b.closeFn()
		return nil, err
	}
	b.image, b.imageNote = c.defaultImage, "from --default-image"
	if b.image == "" {
		tag, note, err := ensureAgentImage(ctx, cli, log)
		if err != nil {
			log.Warn("no default workspace image: creates without --image are refused until serve has one (--default-image, or a static binary that can build turnstile-agent)", "err", err)
			b.imageNote = "NONE: " + err.Error()
		} else {
			b.image, b.imageNote = tag, note
		}
	}
	p, err := docker.New(docker.Config{Client: cli, Installation: installation, DefaultImage: b.image,
		Policy: policy, Logger: log.With("component", "provisioner")})
	if err != nil {
		b.closeFn()
		return nil, err
	}
	b.prov = p
	return b, nil
}

// admitSpec judges a spec as this serve's provisioner would when it runs
// it (provisioner.Policy.Plan: images, profiles, maximum limits), for the
// engine to refuse a create or configure at once that would only fail at
// provisioning (engine.Config.AdmitSpec). The error is the policy's
// reason, which names what to change.
func (b *backend) admitSpec(spec fsm.Spec) error {
	_, err := b.policy.Plan("create", provisioner.Request{Spec: spec}, b.image)
	if pe, ok := errors.AsType[*provisioner.Error](err); ok {
		return errors.New(pe.Reason)
	}
	return err
}

// simStateFile is where the simulator keeps its containers and volumes, so
// that a restart of serve finds them as it would find Docker's.
func simStateFile(dataDir string) string { return filepath.Join(dataDir, "sim", "host.json") }

// newSim opens the simulator once admit agrees to its identity: the
// absolute path of its state file and the host, which is what a restart
// of this serve continues from (status.SimProvisioner).
func newSim(ctx context.Context, c serveConfig, policy provisioner.Policy, installation, dataDir string, log *slog.Logger, admit admitFunc,
	why string) (*backend, error) {
	stateFile, err := filepath.Abs(simStateFile(dataDir))
	if err != nil {
		return nil, fmt.Errorf("the simulator's state file: %w", err)
	}
	identity := status.SimProvisioner(stateFile, hostName())
	hint := fmt.Sprintf("simulated by serve %s, no containers run", engineName())
	if err := admit(ctx, identity, hint); err != nil {
		// auto's fallback is the likely mistake: say what it was.
		return nil, fmt.Errorf("%w (this serve's simulator: %s)", err, why)
	}
	image := c.defaultImage
	if image == "" {
		image = simDefaultImage
	}
	p, err := sim.New(sim.Config{Installation: installation, DefaultImage: image, Policy: policy, MinLatency: c.simMinLatency,
		MaxLatency: c.simMaxLatency, FailureRate: c.simFailureRate, Seed: c.simSeed, StateFile: stateFile,
		Logger: log.With("component", "provisioner")})
	if err != nil {
		return nil, err
	}
	return &backend{kind: kindSim, prov: p, why: why, image: image, imageNote: "simulated", identity: identity, hint: hint, closeFn: func() {}}, nil
}

// sameProvisioner refuses a serve whose container engine (identity, hint)
// is not the one a live engine of its installation announces: each serve
// reconciles every workspace against its own container engine, so serves
// on two would report each other's workspaces exited and remove each
// other's containers. Members that announce none (earlier releases) agree
// with every engine. Two serves starting at once can both pass; turnstile
// status names them (status.OtherProvisioners).
//
// Simulators agree with one another although none sees another's
// containers (each keeps them in its own process): several simulated
// serves on one NATS are how the reliability tests load the engines'
// partitions and takeovers (reliability/twoserve_test.go,
// scaleout_test.go), and what they hurt is only simulated; a simulator
// cannot share its state with another process, so refusing them would
// leave no way to run those. A simulator beside Docker is refused both
// ways: it would fail real workspaces and "run" ones that never start.
// The error has exit code 1: the operator fixes the configuration.
func sameProvisioner(identity, hint string, members []engine.Member) error {
	sim := status.ProvisionerKind(identity) == status.KindSim
	for _, m := range members {
		if m.Provisioner == "" || m.Provisioner == identity || (sim && status.ProvisionerKind(m.Provisioner) == status.KindSim) {
			continue
		}
		theirs := m.Provisioner
		if m.ProvisionerHint != "" {
			theirs += " (" + m.ProvisionerHint + ")"
		}
		simNote := ""
		if sim || status.ProvisionerKind(m.Provisioner) == status.KindSim {
			simNote = ", and a simulator (--provisioner sim, or auto when Docker does not answer) shares an installation with no Docker engine"
		}
		return withCode(exitError, fmt.Errorf("the serve %s (engine %s) provisions on another container engine: %s; this serve's is %s (%s). "+
			"Every serve of an installation must use the same Docker engine (point DOCKER_HOST at it on every serve)%s: "+
			"each serve reports the running workspaces whose containers it cannot see as exited and removes the containers it does not know "+
			"(docs/scale-out.md). Start this serve on that engine, or stop the other serves first",
			cmp.Or(m.Name, m.ID), m.ID, theirs, identity, hint, simNote))
	}
	return nil
}
