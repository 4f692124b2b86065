package main

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/turnstile-dev/turnstile/provisioner"
	"github.com/turnstile-dev/turnstile/provisioner/docker"
	"github.com/turnstile-dev/turnstile/provisioner/sim"
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
	policy  provisioner.Policy
	closeFn func()
}

// chooseBackend builds the provisioner --provisioner asks for: docker,
// sim, or auto (docker when it answers, else sim).
func chooseBackend(ctx context.Context, c serveConfig, installation, dataDir string, log *slog.Logger) (*backend, error) {
	policy, err := c.policy()
	if err != nil {
		return nil, err
	}
	b, err := openBackend(ctx, c, policy, installation, dataDir, log)
	if err != nil {
		return nil, err
	}
	b.policy = policy
	return b, nil
}

func openBackend(ctx context.Context, c serveConfig, policy provisioner.Policy, installation, dataDir string, log *slog.Logger) (*backend, error) {
	if c.provisioner == kindSim {
		return newSim(c, policy, installation, dataDir, log, "chosen with --provisioner sim")
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	cli, err := docker.Connect(pctx)
	cancel()
	if err != nil {
		if c.provisioner == kindDocker {
			return nil, fmt.Errorf("--provisioner docker: %w", err)
		}
		return newSim(c, policy, installation, dataDir, log, fmt.Sprintf("--provisioner auto: Docker is unreachable (%v)", err))
	}
	b := &backend{kind: kindDocker, why: "Docker at " + cli.DaemonHost(), closeFn: func() { _ = cli.Close() }}
	b.image, b.imageNote = c.defaultImage, "from --default-image"
	if b.image == "" {
		tag, note, err := ensureAgentImage(ctx, cli, log)
		if err != nil {
			log.Warn("no default workspace image: workspaces created without --image will fail until one is given", "err", err)
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

// simStateFile is where the simulator keeps its containers and volumes, so
// that a restart of serve finds them as it would find Docker's.
func simStateFile(dataDir string) string { return filepath.Join(dataDir, "sim", "host.json") }

func newSim(c serveConfig, policy provisioner.Policy, installation, dataDir string, log *slog.Logger, why string) (*backend, error) {
	image := c.defaultImage
	if image == "" {
		image = simDefaultImage
	}
	p, err := sim.New(sim.Config{Installation: installation, DefaultImage: image, Policy: policy, MinLatency: c.simMinLatency,
		MaxLatency: c.simMaxLatency, FailureRate: c.simFailureRate, Seed: c.simSeed, StateFile: simStateFile(dataDir),
		Logger: log.With("component", "provisioner")})
	if err != nil {
		return nil, err
	}
	return &backend{kind: kindSim, prov: p, why: why, image: image, imageNote: "simulated", closeFn: func() {}}, nil
}
