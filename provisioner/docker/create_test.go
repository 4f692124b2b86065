package docker_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/turnstile-dev/turnstile/internal/testenv"
	"github.com/turnstile-dev/turnstile/provisioner"
	"github.com/turnstile-dev/turnstile/provisioner/docker"
)

// busyEngine is a real engine as it looks under load for one container
// name: a create the client gives up on (its timeout) completes in the
// daemon all the same, and for a while the name is reserved (creates of it
// conflict, for real) while inspect still says "not found".
type busyEngine struct {
	*client.Client
	name string

	mu sync.Mutex
	// timeoutCreates is how many creates of name still complete in the
	// engine but report a client-side timeout.
	timeoutCreates int
	// hide is how many inspects of name still answer "not found".
	hide int
	// created are the ids of the containers the timed-out creates made.
	created []string
}

func (b *busyEngine) ContainerCreate(ctx context.Context, cfg *container.Config, host *container.HostConfig,
	net *network.NetworkingConfig, platform *ocispec.Platform, name string,
) (container.CreateResponse, error) {
	resp, err := b.Client.ContainerCreate(ctx, cfg, host, net, platform, name)
	b.mu.Lock()
	defer b.mu.Unlock()
	if name != b.name || b.timeoutCreates == 0 || err != nil {
		return resp, err
	}
	b.timeoutCreates--
	b.created = append(b.created, resp.ID)
	return container.CreateResponse{}, fmt.Errorf("Post \"/containers/create?name=%s\": %w", name, context.DeadlineExceeded)
}

func (b *busyEngine) ContainerInspect(ctx context.Context, ref string) (container.InspectResponse, error) {
	b.mu.Lock()
	hidden := ref == b.name && b.hide > 0
	if hidden {
		b.hide--
	}
	b.mu.Unlock()
	if hidden {
		return container.InspectResponse{}, fmt.Errorf("No such container: %s: %w", ref, cerrdefs.ErrNotFound)
	}
	return b.Client.ContainerInspect(ctx, ref)
}

func (b *busyEngine) createdIDs() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.created...)
}

// busy returns a provisioner of f's installation on a busyEngine for ws.
// hide is more looks than the maxRounds (5) a provision once gave such a
// name before it gave up.
func (f *fixture) busy(t *testing.T, ws string, timeoutCreates int) (*docker.Provisioner, *busyEngine) {
	t.Helper()
	b := &busyEngine{Client: f.cli, name: provisioner.ContainerName(ws), timeoutCreates: timeoutCreates, hide: 8}
	p, err := docker.New(docker.Config{Client: b, Installation: f.installation, DefaultImage: f.image,
		PollInterval: 20 * time.Millisecond, Logger: testenv.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	return p, b
}

// workspaceContainers lists the containers of f's installation for ws.
func (f *fixture) workspaceContainers(t *testing.T, ws string) []container.Summary {
	t.Helper()
	cs, err := f.cli.ContainerList(f.ctx, container.ListOptions{All: true, Filters: filters.NewArgs(
		filters.Arg("label", provisioner.LabelInstallation+"="+f.installation),
		filters.Arg("label", provisioner.LabelWorkspace+"="+ws),
	)})
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

func TestNameReservedWhileNotFound(t *testing.T) {
	// The provision's own create times out in the client and completes in
	// the engine: the container it made is adopted and started, not
	// blamed on "something else".
	t.Run("OwnCreateTimedOut", func(t *testing.T) {
		f := setup(t)
		ws := randomID("ws")
		p, b := f.busy(t, ws, 1)
		res, err := p.Provision(f.ctx, provisioner.Request{Workspace: ws, Generation: 4})
		if err != nil {
			t.Fatalf("Provision after its create timed out: %v", err)
		}
		created := b.createdIDs()
		if len(created) != 1 || res.ContainerID != created[0] || !res.Adopted {
			t.Fatalf("result %+v; want the container the timed-out create made (%v), adopted", res, created)
		}
		f.wantRunning(t, res.ContainerID)
		if cs := f.workspaceContainers(t, ws); len(cs) != 1 {
			t.Fatalf("%d containers for the workspace, want 1: %+v", len(cs), cs)
		}
	})
	// Another create of this generation (an earlier attempt's, timed out)
	// holds the name: every create conflicts until it shows up.
	t.Run("EarlierCreateInFlight", func(t *testing.T) {
		f := setup(t)
		ws := randomID("ws")
		p, _ := f.busy(t, ws, 0)
		id := f.rawCreate(t, ws, f.labels(ws, 4))
		res, err := p.Provision(f.ctx, provisioner.Request{Workspace: ws, Generation: 4})
		if err != nil {
			t.Fatalf("Provision while the name is reserved: %v", err)
		}
		if res.ContainerID != id || !res.Adopted {
			t.Fatalf("result %+v; want %s adopted", res, id)
		}
		f.wantRunning(t, id)
	})
	// What shows up is still judged by its labels: a newer generation's
	// container supersedes the provision and is left alone, another
	// installation's is never touched.
	t.Run("NewerGenerationShowsUp", func(t *testing.T) {
		f := setup(t)
		ws := randomID("ws")
		p, _ := f.busy(t, ws, 0)
		id := f.rawCreate(t, ws, f.labels(ws, 9))
		_, err := p.Provision(f.ctx, provisioner.Request{Workspace: ws, Generation: 4})
		if provisioner.CodeOf(err) != provisioner.CodeSuperseded {
			t.Fatalf("Provision: %v; want superseded", err)
		}
		f.wantCreated(t, id)
	})
	t.Run("OtherInstallationShowsUp", func(t *testing.T) {
		f := setup(t)
		ws, other := randomID("ws"), randomID("inst")
		p, _ := f.busy(t, ws, 0)
		labels := f.labels(ws, 4)
		labels[provisioner.LabelInstallation] = other
		id := f.rawCreate(t, ws, labels)
		_, err := p.Provision(f.ctx, provisioner.Request{Workspace: ws, Generation: 4})
		if provisioner.CodeOf(err) != provisioner.CodeNameTaken || !strings.Contains(provisioner.ReasonOf(err), other) {
			t.Fatalf("Provision: %v; want name_taken by %s", err, other)
		}
		f.wantCreated(t, id)
	})
	// Looking again lasts as long as the provision's context, no longer.
	t.Run("Canceled", func(t *testing.T) {
		f := setup(t)
		ws := randomID("ws")
		p, b := f.busy(t, ws, 0)
		b.hide = 1 << 30
		f.rawCreate(t, ws, f.labels(ws, 4))
		ctx, cancel := context.WithTimeout(f.ctx, 500*time.Millisecond)
		defer cancel()
		_, err := p.Provision(ctx, provisioner.Request{Workspace: ws, Generation: 4})
		if provisioner.CodeOf(err) != provisioner.CodeCanceled {
			t.Fatalf("Provision: %v; want canceled when its context ends", err)
		}
	})
}

func (f *fixture) labels(ws string, gen uint64) map[string]string {
	return map[string]string{
		provisioner.LabelInstallation: f.installation, provisioner.LabelWorkspace: ws,
		provisioner.LabelGeneration: fmt.Sprint(gen),
	}
}

// rawCreate creates (without starting) a container named ws-<ws> behind the
// provisioner's back, removed when the test ends.
func (f *fixture) rawCreate(t *testing.T, ws string, labels map[string]string) string {
	t.Helper()
	resp, err := f.cli.ContainerCreate(f.ctx, &container.Config{Image: f.image, Labels: labels}, nil, nil, nil, provisioner.ContainerName(ws))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = f.cli.ContainerRemove(context.Background(), resp.ID, container.RemoveOptions{Force: true})
	})
	return resp.ID
}

// wantCreated fails unless id is still there, created and never started.
func (f *fixture) wantCreated(t *testing.T, id string) {
	t.Helper()
	c, err := f.cli.ContainerInspect(f.ctx, id)
	if err != nil || c.State.Status != container.StateCreated {
		t.Fatalf("container %s: %v; want it untouched (created, never started)", id, err)
	}
}
