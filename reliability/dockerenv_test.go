package reliability_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strconv"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/volume"
	dockerclient "github.com/docker/docker/client"

	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/internal/testenv"
	"github.com/turnstile-dev/turnstile/provisioner"
)

// dockerEnv is one test's share of the Docker engine: an installation id
// of its own (so no two tests, or runs, see each other's containers), a
// suffix for its workspace ids (container names are ws-<id> whatever the
// installation, so ids must be unique on the host too) and the agent image.
type dockerEnv struct {
	cli          *dockerclient.Client
	installation string
	suffix       string
	image        string // the test agent image (internal/testenv), health-checked
}

// newDockerEnv connects to Docker, skipping the test loudly when it is
// unreachable (testenv.Docker), and removes every container and volume
// labelled with the test's installation when the test ends. Call it before
// startServe: cleanups run last-registered-first, so serve stops before
// the leftovers are removed and cannot make new ones.
func newDockerEnv(t *testing.T) *dockerEnv {
	t.Helper()
	cli := testenv.Docker(t)
	suffix := randomHex(t)
	d := &dockerEnv{cli: cli, installation: "rel-" + suffix, suffix: suffix}
	d.image = testenv.AgentImage(t, cli)
	t.Cleanup(func() { d.removeAll(t) })
	return d
}

func randomHex(t *testing.T) string {
	t.Helper()
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// serveEnv is what serve needs to run this env's installation on Docker:
// the installation id, the agent image as the default image (serve builds
// no image of its own then), the images the tests name allowed, and
// deadlines long enough for a loaded 2-core machine, so that a deadline
// never stands in for the fault under test.
func (d *dockerEnv) serveEnv(deadline time.Duration) []string {
	return []string{
		"TURNSTILE_INSTALLATION=" + d.installation,
		"TURNSTILE_DEFAULT_IMAGE=" + d.image,
		"TURNSTILE_ALLOWED_IMAGES=turnstile-reliability-*:*," + d.image,
		"TURNSTILE_DEADLINE_PROVISIONING=" + deadline.String(),
		"TURNSTILE_DEADLINE_STOPPING=" + deadline.String(),
		"TURNSTILE_DEADLINE_DELETING=" + deadline.String(),
	}
}

// imageWithoutHealthCheck builds the agent image without its health check
// (a container is ready once it runs) and removes it when the test ends.
// Hundreds of containers probed every 250 ms would be hundreds of
// `docker exec`s a second: more than a 2-core machine does while it also
// creates the containers.
func (d *dockerEnv) imageWithoutHealthCheck(t *testing.T) string {
	t.Helper()
	tag := testenv.BuildImage(t, d.cli, "turnstile-reliability-nohealth", "FROM "+d.image+"\nHEALTHCHECK NONE\n", nil)
	t.Cleanup(func() {
		d.removeAll(t) // its containers first: this cleanup runs before newDockerEnv's
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if _, err := d.cli.ImageRemove(ctx, tag, image.RemoveOptions{}); err != nil && !cerrdefs.IsNotFound(err) {
			t.Logf("cleanup: remove image %s: %v", tag, err)
		}
	})
	return tag
}

func (d *dockerEnv) filter() filters.Args {
	return filters.NewArgs(filters.Arg("label", provisioner.LabelInstallation+"="+d.installation))
}

// inventory lists the containers and volumes labelled with d's installation.
func (d *dockerEnv) inventory(t *testing.T) ([]container.Summary, []*volume.Volume) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cs, err := d.cli.ContainerList(ctx, container.ListOptions{All: true, Filters: d.filter()})
	if err != nil {
		t.Fatalf("list containers: %v", err)
	}
	vs, err := d.cli.VolumeList(ctx, volume.ListOptions{Filters: d.filter()})
	if err != nil {
		t.Fatalf("list volumes: %v", err)
	}
	return cs, vs.Volumes
}

// removeAll removes whatever carries d's installation label.
func (d *dockerEnv) removeAll(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cs, err := d.cli.ContainerList(ctx, container.ListOptions{All: true, Filters: d.filter()})
	if err != nil {
		t.Errorf("cleanup: list containers: %v", err)
		return
	}
	for _, c := range cs {
		if err := d.cli.ContainerRemove(ctx, c.ID, container.RemoveOptions{Force: true}); err != nil && !cerrdefs.IsNotFound(err) {
			t.Errorf("cleanup: remove container %s: %v", c.ID, err)
		}
	}
	vs, err := d.cli.VolumeList(ctx, volume.ListOptions{Filters: d.filter()})
	if err != nil {
		t.Errorf("cleanup: list volumes: %v", err)
		return
	}
	for _, v := range vs.Volumes {
		if err := d.cli.VolumeRemove(ctx, v.Name, true); err != nil && !cerrdefs.IsNotFound(err) {
			t.Errorf("cleanup: remove volume %s: %v", v.Name, err)
		}
	}
	if len(cs)+len(vs.Volumes) > 0 {
		t.Logf("cleanup: removed %d containers and %d volumes of installation %s", len(cs), len(vs.Volumes), d.installation)
	}
}

// checkInventory compares Docker's inventory of the installation with the
// workspaces' states in the stream: no container or volume of a workspace
// that is deleted or never existed, no container newer than its
// workspace's generation, and for a running workspace exactly its current
// generation's container, running.
func (d *dockerEnv) checkInventory(t *testing.T, store *events.Store) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cs, vs := d.inventory(t)
	states := map[string]fsm.Workspace{}
	state := func(id string) fsm.Workspace {
		if st, ok := states[id]; ok {
			return st
		}
		h, err := store.Load(ctx, id)
		if err != nil {
			t.Fatalf("load %s: %v", id, err)
		}
		states[id] = h.State
		return h.State
	}
	byWorkspace := map[string]container.Summary{}
	for _, c := range cs {
		ws := c.Labels[provisioner.LabelWorkspace]
		gen, err := strconv.ParseUint(c.Labels[provisioner.LabelGeneration], 10, 64)
		if err != nil {
			t.Errorf("container %s has generation label %q", c.Names, c.Labels[provisioner.LabelGeneration])
		}
		st := state(ws)
		byWorkspace[ws] = c
		switch {
		case !st.Status.Live():
			t.Errorf("orphan container %s (%s, generation %d, %s): workspace %q is %s", c.Names, c.ID[:12], gen, c.State, ws, st.Status)
		case gen > st.Generation:
			t.Errorf("container %s is of generation %d, newer than its workspace (%s at %d)", c.Names, gen, st.Status, st.Generation)
		case st.Status == fsm.Running && (gen != st.Generation || c.State != container.StateRunning):
			t.Errorf("workspace %s is running at generation %d, its container %s is %s at generation %d", ws, st.Generation, c.Names, c.State, gen)
		}
	}
	for id, st := range states {
		if _, ok := byWorkspace[id]; !ok && st.Status == fsm.Running {
			t.Errorf("workspace %s is running at generation %d without a container", id, st.Generation)
		}
	}
	for _, v := range vs {
		ws := v.Labels[provisioner.LabelWorkspace]
		if st := state(ws); !st.Status.Live() {
			t.Errorf("orphan volume %s: workspace %q is %s", v.Name, ws, st.Status)
		}
	}
}

// checkRunning checks that every workspace in ids is running at its
// current generation in Docker: one container, labelled so, running.
func (d *dockerEnv) checkRunning(t *testing.T, store *events.Store, ids []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, id := range ids {
		h, err := store.Load(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		c, err := d.cli.ContainerInspect(ctx, provisioner.ContainerName(id))
		if err != nil {
			t.Errorf("workspace %s (%s at generation %d): inspect its container: %v", id, h.State.Status, h.State.Generation, err)
			continue
		}
		if h.State.Status != fsm.Running || !c.State.Running || c.Config.Labels[provisioner.LabelGeneration] != fmt.Sprint(h.State.Generation) ||
			c.Config.Labels[provisioner.LabelInstallation] != d.installation {
			t.Errorf("workspace %s is %s at generation %d; its container runs %v, labels %v", id, h.State.Status, h.State.Generation, c.State.Running, c.Config.Labels)
		}
	}
}
