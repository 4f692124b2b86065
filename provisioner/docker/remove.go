package docker

import (
	"context"
	"fmt"
	"time"

	"github.com/docker/docker/api/types/container"

	"github.com/turnstile-dev/turnstile/provisioner"
)

// Stop stops the workspace's container if its generation is at most
// generation; see provisioner.Provisioner.
func (p *Provisioner) Stop(ctx context.Context, workspace string, generation uint64) error {
	const op = "stop"
	if err := provisioner.Validate(op, workspace, generation); err != nil {
		return err
	}
	c, ok, err := p.own(ctx, op, workspace, generation)
	if err != nil || !ok {
		return err
	}
	if !c.State.Running {
		return nil
	}
	if err := p.stopContainer(ctx, c.ID); err != nil {
		return p.engineError(ctx, op, workspace, generation, "stop container "+provisioner.ContainerName(workspace), err)
	}
	p.log.Info("stopped container", "workspace", workspace, "generation", generation, "container", c.ID)
	return nil
}

// Delete removes the workspace's container (if its generation is at most
// generation) and volume; see provisioner.Provisioner.
func (p *Provisioner) Delete(ctx context.Context, workspace string, generation uint64) error {
	const op = "delete"
	if err := provisioner.Validate(op, workspace, generation); err != nil {
		return err
	}
	c, ok, err := p.own(ctx, op, workspace, generation)
	if err != nil {
		return err
	}
	if ok {
		if err := p.removeContainer(ctx, c.ID); err != nil {
			return p.engineError(ctx, op, workspace, generation, "remove container "+provisioner.ContainerName(workspace), err)
		}
		p.log.Info("removed container", "workspace", workspace, "generation", generation, "container", c.ID)
	}
	return p.removeVolume(ctx, op, workspace, generation)
}

// own inspects the workspace's container for a stop or delete of
// generation. ok is false when there is none of this installation's.
func (p *Provisioner) own(ctx context.Context, op, workspace string, generation uint64) (container.InspectResponse, bool, error) {
	name := provisioner.ContainerName(workspace)
	c, err := p.cli.ContainerInspect(ctx, name)
	switch {
	case isNotFound(err):
		return c, false, nil
	case err != nil:
		return c, false, p.engineError(ctx, op, workspace, generation, "inspect container "+name, err)
	}
	if owner := ownerOf(c); owner != p.cfg.Installation {
		p.log.Warn("container belongs to another installation; left alone", "container", name, "owner", owner, "op", op)
		return c, false, nil
	}
	if gen := generationOf(c.Config.Labels); gen > generation {
		return c, false, provisioner.Superseded(op, workspace, generation, gen)
	}
	return c, true, nil
}

func (p *Provisioner) stopTimeout() *int {
	s := int((p.cfg.StopTimeout + time.Second - 1) / time.Second)
	return &s
}

// stopContainer stops id gracefully (SIGTERM, then SIGKILL after
// StopTimeout). Gone or already stopped is success.
func (p *Provisioner) stopContainer(ctx context.Context, id string) error {
	err := p.cli.ContainerStop(ctx, id, container.StopOptions{Timeout: p.stopTimeout()})
	if err != nil && !isNotFound(err) {
		return err
	}
	return nil
}

// removeContainer stops id gracefully, then removes it. Gone is success.
func (p *Provisioner) removeContainer(ctx context.Context, id string) error {
	if err := p.stopContainer(ctx, id); err != nil {
		return err
	}
	return p.forceRemove(ctx, id)
}

// forceRemove removes id, killing it if it runs, and returns once it is
// gone. A removal already in progress elsewhere is waited for. The
// anonymous volumes of the image's VOLUMEs go with it (each container gets
// new ones: kept, a loop of restarts fills the disk); Docker never removes
// a named volume this way, so the workspace's ws-<id>-data stays.
func (p *Provisioner) forceRemove(ctx context.Context, id string) error {
	err := p.cli.ContainerRemove(ctx, id, container.RemoveOptions{Force: true, RemoveVolumes: true})
	switch {
	case err == nil || isNotFound(err):
		return nil
	case !isConflict(err):
		return err
	}
	t := time.NewTicker(p.cfg.PollInterval)
	defer t.Stop()
	for {
		if _, err := p.cli.ContainerInspect(ctx, id); isNotFound(err) {
			return nil
		} else if err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for container %s to be removed: %w", id, ctx.Err())
		case <-t.C:
		}
	}
}

// removeDetached force-removes id even though ctx may have ended.
func (p *Provisioner) removeDetached(ctx context.Context, id string) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.cfg.CleanupTimeout)
	defer cancel()
	return p.forceRemove(ctx, id)
}
