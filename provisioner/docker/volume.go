package docker

import (
	"context"

	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/volume"

	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/provisioner"
)

// ListVolumes describes every workspace volume labelled with this
// installation; see provisioner.Provisioner.
func (p *Provisioner) ListVolumes(ctx context.Context) ([]provisioner.VolumeInfo, error) {
	resp, err := p.cli.VolumeList(ctx, volume.ListOptions{
		Filters: filters.NewArgs(filters.Arg("label", provisioner.LabelInstallation+"="+p.cfg.Installation)),
	})
	if err != nil {
		return nil, p.engineError(ctx, "list", "", 0, "list volumes", err)
	}
	out := make([]provisioner.VolumeInfo, 0, len(resp.Volumes))
	for _, v := range resp.Volumes {
		if v == nil {
			continue
		}
		ws := v.Labels[provisioner.LabelWorkspace]
		if fsm.ValidateID(ws) != nil || v.Name != provisioner.VolumeName(ws) {
			// Not one Provision made: Delete would never remove it, so
			// listing it would only invite a reconciler to try forever.
			p.log.Warn("volume carries this installation's label but is not a workspace volume; ignored",
				"volume", v.Name, "workspace_label", ws)
			continue
		}
		out = append(out, provisioner.VolumeInfo{Workspace: ws, Name: v.Name})
	}
	return out, nil
}

// RemoveVolume removes the workspace's volume unless a container uses it;
// see provisioner.Provisioner.
func (p *Provisioner) RemoveVolume(ctx context.Context, workspace string) error {
	const op = "remove volume"
	if err := fsm.ValidateID(workspace); err != nil {
		return &provisioner.Error{Op: op, Workspace: workspace, Code: provisioner.CodeInvalid, Reason: err.Error(), Err: err}
	}
	return p.removeVolume(ctx, op, workspace, 0)
}

// removeVolume removes the workspace's volume if it is this
// installation's. Docker refuses to remove a volume a container uses (and
// so does this: no force).
func (p *Provisioner) removeVolume(ctx context.Context, op, workspace string, generation uint64) error {
	name := provisioner.VolumeName(workspace)
	v, err := p.cli.VolumeInspect(ctx, name)
	switch {
	case isNotFound(err):
		return nil
	case err != nil:
		return p.engineError(ctx, op, workspace, generation, "inspect volume "+name, err)
	case v.Labels[provisioner.LabelInstallation] != p.cfg.Installation:
		p.log.Warn("volume belongs to another installation; left alone", "volume", name, "owner", v.Labels[provisioner.LabelInstallation], "op", op)
		return nil
	}
	if err := p.cli.VolumeRemove(ctx, name, false); err != nil && !isNotFound(err) {
		return p.engineError(ctx, op, workspace, generation, "remove volume "+name, err)
	}
	p.log.Info("removed volume", "workspace", workspace, "generation", generation, "volume", name, "op", op)
	return nil
}
