package docker_test

import (
	"slices"
	"strings"
	"testing"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/mount"

	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/provisioner"
)

// TestImageVolumes: an image may declare VOLUMEs (postgres, mysql and
// redis do). Each container got a new anonymous volume at each, which no
// replace or delete removed: a loop of restarts filled the disk. Under
// restricted they were also writable disk outside /data and /tmp.
func TestImageVolumes(t *testing.T) {
	// Under standard Docker still makes them; they go with their
	// container, and the workspace's named volume stays until Delete.
	t.Run("RemovedWithTheirContainer", func(t *testing.T) {
		f := setup(t)
		img := f.buildImage(t, "turnstile-agent-volume", "FROM "+f.image+"\nVOLUME /scratch\n", nil)
		pol := testPolicy
		pol.AllowedProfiles = []string{provisioner.ProfileRestricted, provisioner.ProfileStandard}
		p := mustNewPolicy(t, f.cli, f.installation, f.image, pol)
		ws := randomID("ws")
		var vols []string
		for gen := uint64(1); gen <= 3; gen++ {
			res, err := p.Provision(f.ctx, provisioner.Request{Workspace: ws, Generation: gen,
				Spec: fsm.Spec{Image: img, Profile: provisioner.ProfileStandard}})
			if err != nil {
				t.Fatal(err)
			}
			mounts := f.inspect(t, res.ContainerID).Mounts
			i := slices.IndexFunc(mounts, func(m container.MountPoint) bool { return m.Destination == "/scratch" })
			if i < 0 || mounts[i].Type != mount.TypeVolume {
				t.Fatalf("generation %d: mounts %+v; want an anonymous volume at /scratch", gen, mounts)
			}
			vols = append(vols, mounts[i].Name)
			if gen == 1 {
				writeFile(t, f, res.ContainerID, "marker", "generation 1 was here")
				continue
			}
			if got, err := readFile(t, f, res.ContainerID, "marker"); err != nil || got != "generation 1 was here" {
				t.Fatalf("generation %d: marker %q, %v; want the named volume kept across the replace", gen, got, err)
			}
			f.wantNoVolume(t, vols[gen-2], "the anonymous volume of the replaced generation")
		}
		if err := p.Delete(f.ctx, ws, 4); err != nil {
			t.Fatal(err)
		}
		f.wantNoVolume(t, vols[2], "the anonymous volume of the deleted workspace")
		f.wantNoVolume(t, provisioner.VolumeName(ws), "the workspace's volume after Delete")
	})
	// Under restricted a tmpfs like /tmp covers each (none at /data, the
	// workspace's volume): writable, bounded, no disk, no volume at all.
	t.Run("RestrictedCoversThemWithTmpfs", func(t *testing.T) {
		f := setup(t)
		img := f.buildImage(t, "turnstile-agent-volumes", "FROM "+f.image+"\nVOLUME /scratch /tmp/cache/ /data\n", nil)
		res, err := f.p.Provision(f.ctx, provisioner.Request{Workspace: randomID("ws"), Generation: 1, Spec: fsm.Spec{Image: img}})
		if err != nil {
			t.Fatal(err)
		}
		c := f.inspect(t, res.ContainerID)
		if len(c.Mounts) != 1 || c.Mounts[0].Destination != provisioner.DataPath || c.Mounts[0].Name != provisioner.VolumeName(c.Config.Hostname) {
			t.Errorf("mounts %+v; want the workspace's volume at /data alone", c.Mounts)
		}
		for _, p := range []string{"/scratch", "/tmp/cache"} {
			if o := c.HostConfig.Tmpfs[p]; !strings.Contains(o, "noexec") || !strings.Contains(o, "size=67108864") {
				t.Errorf("tmpfs %v: want a 64 MiB noexec tmpfs at %s", c.HostConfig.Tmpfs, p)
			}
		}
		if code, out := f.exec(t, res.ContainerID, "/agent", "writable", "/scratch", "/tmp/cache", provisioner.DataPath); code != 0 {
			t.Errorf("the agent cannot write to the image's volume paths: exit %d: %s", code, out)
		}
	})
}

// wantNoVolume fails if the volume name exists.
func (f *fixture) wantNoVolume(t *testing.T, name, what string) {
	t.Helper()
	if _, err := f.cli.VolumeInspect(f.ctx, name); !cerrdefs.IsNotFound(err) {
		t.Errorf("%s (%s): %v; want it removed", what, name, err)
		_ = f.cli.VolumeRemove(f.ctx, name, true) // leave nothing behind
	}
}
