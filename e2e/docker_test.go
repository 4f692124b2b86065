package e2e_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"

	"github.com/turnstile-dev/turnstile/internal/testenv"
	"github.com/turnstile-dev/turnstile/provisioner"
)

// TestDocker: on a real Docker engine, create with no --image runs the
// default image serve builds from its own (static) binary, confined by the
// restricted profile yet able to write to its volume and /tmp; an --image
// that is not there fails with a reason that says so, one outside
// --allowed-images is refused when decided with a reason naming the flag;
// and delete removes the container.
func TestDocker(t *testing.T) {
	cli := testenv.Docker(t)
	suffix := randomSuffix(t)
	installation := "e2e-" + suffix
	srv := startServe(t, serveOptions{args: []string{"--provisioner", "docker", "--installation", installation,
		"--allowed-images", "turnstile-e2e-missing:*"}})
	ok, missing, elsewhere := "dock-"+suffix, "nope-"+suffix, "else-"+suffix
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	t.Cleanup(func() { // whatever happens, leave no container behind
		for _, id := range []string{ok, missing, elsewhere} {
			_ = cli.ContainerRemove(context.Background(), provisioner.ContainerName(id), containerRemoveForce())
		}
	})

	t.Run("Readyz", func(t *testing.T) {
		status, body := srv.httpDo(t, "GET", "/readyz", "", "")
		if status != http.StatusOK || !strings.Contains(string(body), `"provisioner": "docker"`) || !strings.Contains(string(body), `"simulated": false`) {
			t.Fatalf("readyz: %d %s", status, body)
		}
	})

	t.Run("DefaultImage", func(t *testing.T) {
		r := srv.turnstile(t, "create", ok, "--wait", "--timeout", "4m")
		want(t, r, 0, "create --wait on Docker")
		if !strings.Contains(r.stdout, ok+" is running at generation 1") {
			t.Fatalf("create --wait:\n%s", r)
		}
		c, err := cli.ContainerInspect(ctx, provisioner.ContainerName(ok))
		if err != nil {
			t.Fatal(err)
		}
		if !c.State.Running || c.Config.Labels[provisioner.LabelInstallation] != installation ||
			c.Config.Labels[provisioner.LabelWorkspace] != ok || !strings.HasPrefix(c.Config.Image, "turnstile-agent:") {
			t.Fatalf("container: running %v, labels %v, image %s", c.State.Running, c.Config.Labels, c.Config.Image)
		}
		// issue 12 item 7: the restricted profile, and the default image's
		// agent still has a writable volume and /tmp.
		hc := c.HostConfig
		if len(hc.CapDrop) != 1 || hc.CapDrop[0] != "ALL" || !hc.ReadonlyRootfs || hc.Memory != 512<<20 ||
			hc.PidsLimit == nil || c.Config.User != provisioner.NonRootUser {
			t.Fatalf("container confinement: cap drop %v, read-only %v, memory %d, pids %v, user %q",
				hc.CapDrop, hc.ReadonlyRootfs, hc.Memory, hc.PidsLimit, c.Config.User)
		}
		exec, err := cli.ContainerExecCreate(ctx, c.ID, container.ExecOptions{
			Cmd: []string{"/turnstile", "agent", "writable", provisioner.DataPath, provisioner.TmpPath}, AttachStdout: true, AttachStderr: true})
		if err != nil {
			t.Fatal(err)
		}
		att, err := cli.ContainerExecAttach(ctx, exec.ID, container.ExecAttachOptions{})
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, att.Reader) // until it ends
		att.Close()
		if st, err := cli.ContainerExecInspect(ctx, exec.ID); err != nil || st.Running || st.ExitCode != 0 {
			t.Fatalf("agent writable /data /tmp in the default image: %+v, %v", st, err)
		}
	})

	t.Run("ImageNotAllowed", func(t *testing.T) {
		// Refused when decided, nothing stored: the workspace does not
		// come to be, to fail later at provisioning.
		r := srv.turnstile(t, "create", elsewhere, "--image", "turnstile-e2e-elsewhere:1", "--wait", "--timeout", "2m")
		want(t, r, 2, "create --wait with an image outside --allowed-images")
		if !strings.Contains(r.stderr, "image turnstile-e2e-elsewhere:1 is not allowed here") || !strings.Contains(r.stderr, "--allowed-images") {
			t.Fatalf("the reason does not say the image is not allowed:\n%s", r)
		}
		want(t, srv.turnstile(t, "history", elsewhere), 3, "history of a workspace whose create was refused")
	})

	t.Run("MissingImage", func(t *testing.T) {
		r := srv.turnstile(t, "create", missing, "--image", "turnstile-e2e-missing:none", "--wait", "--timeout", "2m")
		want(t, r, 1, "create --wait with a missing image")
		if !strings.Contains(r.stderr, "image not found: turnstile-e2e-missing:none") {
			t.Fatalf("the reason does not say the image is missing:\n%s", r)
		}
	})

	t.Run("Delete", func(t *testing.T) {
		for _, id := range []string{ok, missing} {
			want(t, srv.turnstile(t, "delete", id, "--wait", "--timeout", "2m"), 0, "delete "+id)
		}
		if _, err := cli.ContainerInspect(ctx, provisioner.ContainerName(ok)); err == nil {
			t.Fatalf("container %s is still there after delete", provisioner.ContainerName(ok))
		}
	})
	want(t, srv.turnstile(t, "audit", "--all"), 0, "audit --all")
}

func randomSuffix(t *testing.T) string {
	t.Helper()
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func containerRemoveForce() container.RemoveOptions {
	return container.RemoveOptions{Force: true, RemoveVolumes: true}
}
