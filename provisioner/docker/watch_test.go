package docker_test

import (
	"context"
	"errors"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/client"

	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/internal/testenv"
	"github.com/turnstile-dev/turnstile/provisioner"
	"github.com/turnstile-dev/turnstile/provisioner/docker"
)

// brokenStream breaks the first event stream right after its first event.
type brokenStream struct {
	client.APIClient
	calls atomic.Int32
}

func (b *brokenStream) Events(ctx context.Context, opts events.ListOptions) (<-chan events.Message, <-chan error) {
	if b.calls.Add(1) > 1 {
		return b.APIClient.Events(ctx, opts)
	}
	inner, cancel := context.WithCancel(ctx)
	msgs, errs := b.APIClient.Events(inner, opts)
	out, outErr := make(chan events.Message), make(chan error, 1)
	go func() {
		defer cancel()
		select {
		case m := <-msgs:
			select {
			case out <- m:
				outErr <- errors.New("simulated broken event stream")
			case <-ctx.Done():
				outErr <- ctx.Err()
			}
		case err := <-errs:
			outErr <- err
		case <-ctx.Done():
			outErr <- ctx.Err()
		}
	}()
	return out, outErr
}

func TestWatchResumesWithoutLossOrDuplicates(t *testing.T) {
	t.Parallel()
	cli := testenv.Docker(t)
	image := testenv.AgentImage(t, cli)
	installation := randomID("inst")
	mustNew(t, cli, installation, image) // cleanup of the installation
	flaky := &brokenStream{APIClient: cli}
	p, err := docker.New(docker.Config{Client: flaky, Installation: installation, DefaultImage: image,
		PollInterval: 50 * time.Millisecond, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ch, err := p.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ws := randomID("ws")
	res, err := p.Provision(ctx, provisioner.Request{Workspace: ws, Generation: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := cli.ContainerKill(ctx, res.ContainerID, "KILL"); err != nil {
		t.Fatal(err)
	}
	next := func() provisioner.Exit {
		t.Helper()
		select {
		case ex := <-ch:
			return ex
		case <-time.After(30 * time.Second):
			t.Fatal("no report within 30s")
			return provisioner.Exit{}
		}
	}
	if ex := next(); ex.Removed || ex.ContainerID != res.ContainerID {
		t.Fatalf("first report %+v, want the exit of %s", ex, res.ContainerID)
	}
	if err := p.Delete(ctx, ws, 2); err != nil {
		t.Fatal(err)
	}
	// The stream broke after the exit; the resumed one replays from it.
	if ex := next(); !ex.Removed || ex.ContainerID != res.ContainerID {
		t.Fatalf("second report %+v, want the removal of %s (and no repeated exit)", ex, res.ContainerID)
	}
	if n := flaky.calls.Load(); n < 2 {
		t.Fatalf("%d event streams opened, want a resumed one", n)
	}
	cancel()
	for range ch {
	}
}

// TestWatchExitCodeNotFromLabels (found in review): Docker copies a
// container's labels, its image's included, into the attributes of its
// events, over the "exitCode" a die event carries. An image with the
// label exitCode=0 made every exit of its containers, a kill included,
// read as a clean exit 0 in the container_exited event and its reason.
// The code comes from the container's state.
func TestWatchExitCodeNotFromLabels(t *testing.T) {
	f := setup(t)
	img := f.buildImage(t, "turnstile-agent-exitlabel", "FROM "+f.image+"\nLABEL exitCode=0\n", nil)
	ctx, cancel := context.WithTimeout(f.ctx, time.Minute)
	defer cancel()
	ch, err := f.p.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	res, err := f.p.Provision(ctx, provisioner.Request{Workspace: randomID("ws"), Generation: 1, Spec: fsm.Spec{Image: img}})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.cli.ContainerKill(ctx, res.ContainerID, "KILL"); err != nil {
		t.Fatal(err)
	}
	select {
	case ex := <-ch:
		if ex.ContainerID != res.ContainerID || ex.ExitCode == nil || *ex.ExitCode != 137 {
			code := "none"
			if ex.ExitCode != nil {
				code = strconv.Itoa(*ex.ExitCode)
			}
			t.Fatalf("exit of a killed container: %s code %s, want %s code 137", ex.ContainerID, code, res.ContainerID)
		}
	case <-ctx.Done():
		t.Fatal("no exit reported")
	}
	cancel()
	for range ch {
	}
}
