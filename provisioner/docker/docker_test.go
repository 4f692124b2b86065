package docker_test

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/volume"
	"github.com/docker/docker/client"
	"go.uber.org/goleak"

	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/internal/agent"
	"github.com/turnstile-dev/turnstile/internal/testenv"
	"github.com/turnstile-dev/turnstile/provisioner"
	"github.com/turnstile-dev/turnstile/provisioner/docker"
	"github.com/turnstile-dev/turnstile/provisioner/provisionertest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

func randomID(prefix string) string { return fmt.Sprintf("%s-%08x", prefix, rand.Uint32()) }

// testPolicy is the strict default policy, allowing the images the tests
// build from the agent image.
var testPolicy = provisioner.Policy{AllowedImages: []string{"turnstile-agent-*:*"}}

// mustNew returns a provisioner for installation and removes everything
// labelled with it when the test ends.
func mustNew(t *testing.T, cli *client.Client, installation, image string) *docker.Provisioner {
	t.Helper()
	return mustNewPolicy(t, cli, installation, image, testPolicy)
}

func mustNewPolicy(t *testing.T, cli *client.Client, installation, image string, policy provisioner.Policy) *docker.Provisioner {
	t.Helper()
	p, err := docker.New(docker.Config{Client: cli, Installation: installation, DefaultImage: image, Policy: policy,
		PollInterval: 50 * time.Millisecond, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { removeInstallation(t, cli, installation) })
	return p
}

// removeInstallation removes every container and volume labelled with
// installation, whatever the test left behind.
func removeInstallation(t *testing.T, cli *client.Client, installation string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	f := filters.NewArgs(filters.Arg("label", provisioner.LabelInstallation+"="+installation))
	cs, err := cli.ContainerList(ctx, container.ListOptions{All: true, Filters: f})
	if err != nil {
		t.Errorf("cleanup: list containers: %v", err)
		return
	}
	for _, c := range cs {
		if err := cli.ContainerRemove(ctx, c.ID, container.RemoveOptions{Force: true, RemoveVolumes: true}); err != nil && !cerrdefs.IsNotFound(err) {
			t.Errorf("cleanup: remove container %s: %v", c.ID, err)
		}
	}
	vs, err := cli.VolumeList(ctx, volume.ListOptions{Filters: f})
	if err != nil {
		t.Errorf("cleanup: list volumes: %v", err)
		return
	}
	for _, v := range vs.Volumes {
		if err := cli.VolumeRemove(ctx, v.Name, true); err != nil && !cerrdefs.IsNotFound(err) {
			t.Errorf("cleanup: remove volume %s: %v", v.Name, err)
		}
	}
}

func volumeExists(t *testing.T, cli *client.Client, ws string) bool {
	t.Helper()
	_, err := cli.VolumeInspect(context.Background(), provisioner.VolumeName(ws))
	if err != nil && !cerrdefs.IsNotFound(err) {
		t.Fatal(err)
	}
	return err == nil
}

// waitNotRunning polls until the container stops running.
func waitNotRunning(t *testing.T, cli *client.Client, name string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := cli.ContainerInspect(context.Background(), name)
		if cerrdefs.IsNotFound(err) || (err == nil && !c.State.Running) {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s still running after 30s", name)
		}
		time.Sleep(20 * time.Millisecond) // polling interval
	}
}

func TestContract(t *testing.T) {
	provisionertest.Run(t, func(t *testing.T) provisionertest.Backend {
		cli := testenv.Docker(t)
		image := testenv.AgentImage(t, cli)
		return provisionertest.Backend{
			New: func(t *testing.T, installation string, policy provisioner.Policy) provisioner.Provisioner {
				return mustNewPolicy(t, cli, installation, image, policy)
			},
			Image: image,
			Kill: func(t *testing.T, ws string) {
				if err := cli.ContainerKill(context.Background(), provisioner.ContainerName(ws), "KILL"); err != nil {
					t.Fatal(err)
				}
				waitNotRunning(t, cli, provisioner.ContainerName(ws))
			},
			VolumeExists: func(t *testing.T, ws string) bool { return volumeExists(t, cli, ws) },
			Remove: func(t *testing.T, ws string) {
				if err := cli.ContainerRemove(context.Background(), provisioner.ContainerName(ws), container.RemoveOptions{Force: true}); err != nil {
					t.Fatal(err)
				}
			},
		}
	}, provisionertest.Features{Volumes: true, AgentEnv: true})
}

// fixture is one Docker-specific test's setup.
type fixture struct {
	cli          *client.Client
	image        string
	installation string
	p            *docker.Provisioner
	ctx          context.Context
}

func setup(t *testing.T) *fixture {
	t.Helper()
	t.Parallel()
	cli := testenv.Docker(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	f := &fixture{cli: cli, image: testenv.AgentImage(t, cli), installation: randomID("inst"), ctx: ctx}
	f.p = mustNew(t, cli, f.installation, f.image)
	return f
}

// rawContainer creates and starts a container named ws-<ws> behind the
// provisioner's back, removed when the test ends.
func (f *fixture) rawContainer(t *testing.T, ws string, labels map[string]string) string {
	t.Helper()
	id := f.rawCreate(t, ws, labels)
	if err := f.cli.ContainerStart(f.ctx, id, container.StartOptions{}); err != nil {
		t.Fatal(err)
	}
	return id
}

func (f *fixture) wantRunning(t *testing.T, id string) {
	t.Helper()
	c, err := f.cli.ContainerInspect(f.ctx, id)
	if err != nil || !c.State.Running {
		t.Fatalf("container %s: running %v, %v; want it untouched and running", id, err == nil && c.State.Running, err)
	}
}

func TestForeignContainers(t *testing.T) {
	t.Run("Unlabelled", func(t *testing.T) {
		f := setup(t)
		ws := randomID("ws")
		id := f.rawContainer(t, ws, nil)
		_, err := f.p.Provision(f.ctx, provisioner.Request{Workspace: ws, Generation: 1})
		if provisioner.CodeOf(err) != provisioner.CodeNameTaken || !strings.Contains(provisioner.ReasonOf(err), "does not manage") {
			t.Fatalf("Provision over an unlabelled ws-%s: %v; want name_taken by something unmanaged", ws, err)
		}
		if err := f.p.Stop(f.ctx, ws, 2); err != nil {
			t.Fatal(err)
		}
		if err := f.p.Delete(f.ctx, ws, 3); err != nil {
			t.Fatal(err)
		}
		f.wantRunning(t, id)
		if l, err := f.p.List(f.ctx); err != nil || len(l) != 0 {
			t.Fatalf("List: %v, %v; want nothing", l, err)
		}
	})
	t.Run("OtherInstallation", func(t *testing.T) {
		f := setup(t)
		ws, other := randomID("ws"), randomID("inst")
		id := f.rawContainer(t, ws, map[string]string{
			provisioner.LabelInstallation: other, provisioner.LabelWorkspace: ws, provisioner.LabelGeneration: "1",
		})
		_, err := f.p.Provision(f.ctx, provisioner.Request{Workspace: ws, Generation: 7})
		want := fmt.Sprintf("container name ws-%s is taken by installation %s", ws, other)
		if provisioner.CodeOf(err) != provisioner.CodeNameTaken || !strings.Contains(provisioner.ReasonOf(err), want) {
			t.Fatalf("Provision: %v; want %q", err, want)
		}
		if err := f.p.Stop(f.ctx, ws, 8); err != nil {
			t.Fatal(err)
		}
		if err := f.p.Delete(f.ctx, ws, 9); err != nil {
			t.Fatal(err)
		}
		f.wantRunning(t, id)
	})
	t.Run("OtherInstallationsVolume", func(t *testing.T) {
		f := setup(t)
		ws, other := randomID("ws"), randomID("inst")
		vol := provisioner.VolumeName(ws)
		if _, err := f.cli.VolumeCreate(f.ctx, volume.CreateOptions{Name: vol, Labels: map[string]string{provisioner.LabelInstallation: other}}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = f.cli.VolumeRemove(context.Background(), vol, true) })
		_, err := f.p.Provision(f.ctx, provisioner.Request{Workspace: ws, Generation: 1})
		if provisioner.CodeOf(err) != provisioner.CodeNameTaken || !strings.Contains(provisioner.ReasonOf(err), "volume name "+vol) {
			t.Fatalf("Provision: %v; want the volume name taken", err)
		}
		if err := f.p.Delete(f.ctx, ws, 2); err != nil {
			t.Fatal(err)
		}
		if !volumeExists(t, f.cli, ws) {
			t.Fatal("Delete removed another installation's volume")
		}
		if _, err := f.p.Inspect(f.ctx, ws); provisioner.CodeOf(err) == "" {
			t.Fatal("Inspect found a container")
		}
	})
}

func TestContainerShape(t *testing.T) {
	f := setup(t)
	ws := randomID("ws")
	spec := fsm.Spec{
		Image: f.image, Env: map[string]string{"GREETING": "hello", "B": "2"},
		CPUs: 0.5, MemoryBytes: 64 << 20, Labels: map[string]string{"team": "infra"},
	}
	res, err := f.p.Provision(f.ctx, provisioner.Request{Workspace: ws, Generation: 3, Spec: spec})
	if err != nil {
		t.Fatal(err)
	}
	c, err := f.cli.ContainerInspect(f.ctx, res.ContainerID)
	if err != nil {
		t.Fatal(err)
	}
	if c.Name != "/ws-"+ws {
		t.Errorf("name %q, want /ws-%s", c.Name, ws)
	}
	// issue 12 item 7: the spec's labels are applied under a prefix of
	// Turnstile's, never as given.
	for k, v := range map[string]string{
		provisioner.LabelWorkspace: ws, provisioner.LabelGeneration: "3",
		provisioner.LabelInstallation: f.installation, provisioner.LabelUserPrefix + "team": "infra",
	} {
		if c.Config.Labels[k] != v {
			t.Errorf("label %s=%q, want %q", k, c.Config.Labels[k], v)
		}
	}
	if _, ok := c.Config.Labels["team"]; ok {
		t.Errorf("labels %v: the spec's label is there without the prefix", c.Config.Labels)
	}
	for _, e := range []string{"GREETING=hello", "B=2"} {
		if !slices.Contains(c.Config.Env, e) {
			t.Errorf("env %v lacks %s", c.Config.Env, e)
		}
	}
	hc := c.HostConfig
	if hc.NanoCPUs != 5e8 || hc.Memory != 64<<20 || hc.RestartPolicy.Name != container.RestartPolicyDisabled {
		t.Errorf("limits: nano cpus %d, memory %d, restart %q", hc.NanoCPUs, hc.Memory, hc.RestartPolicy.Name)
	}
	if len(c.Mounts) != 1 || c.Mounts[0].Name != provisioner.VolumeName(ws) || c.Mounts[0].Destination != provisioner.DataPath {
		t.Errorf("mounts %+v, want %s at %s", c.Mounts, provisioner.VolumeName(ws), provisioner.DataPath)
	}
	if c.State.Health == nil || c.State.Health.Status != container.Healthy {
		t.Errorf("health %+v, want healthy once Provision returned", c.State.Health)
	}
	v, err := f.cli.VolumeInspect(f.ctx, provisioner.VolumeName(ws))
	if err != nil || v.Labels[provisioner.LabelInstallation] != f.installation || v.Labels[provisioner.LabelWorkspace] != ws {
		t.Errorf("volume %+v, %v: want it labelled", v.Labels, err)
	}
}

// writeFile puts a file into a container's filesystem through the archive
// API (the image has no shell).
func writeFile(t *testing.T, f *fixture, id, name, content string) {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(content))}); err != nil {
		t.Fatal(err)
	}
	_, _ = tw.Write([]byte(content))
	_ = tw.Close()
	if err := f.cli.CopyToContainer(f.ctx, id, provisioner.DataPath, &buf, container.CopyToContainerOptions{}); err != nil {
		t.Fatal(err)
	}
}

func readFile(t *testing.T, f *fixture, id, name string) (string, error) {
	t.Helper()
	rc, _, err := f.cli.CopyFromContainer(f.ctx, id, provisioner.DataPath+"/"+name)
	if err != nil {
		return "", err
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	if _, err := tr.Next(); err != nil {
		return "", err
	}
	b, err := io.ReadAll(tr)
	return string(b), err
}

func TestVolumeKeepsDataUntilDelete(t *testing.T) {
	f := setup(t)
	ws := randomID("ws")
	first, err := f.p.Provision(f.ctx, provisioner.Request{Workspace: ws, Generation: 1})
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, f, first.ContainerID, "marker", "generation 1 was here")
	// restart: stop (gen 2), start (gen 3) in a new container
	if err := f.p.Stop(f.ctx, ws, 2); err != nil {
		t.Fatal(err)
	}
	second, err := f.p.Provision(f.ctx, provisioner.Request{Workspace: ws, Generation: 3})
	if err != nil {
		t.Fatal(err)
	}
	if second.ContainerID == first.ContainerID {
		t.Fatal("generation 3 reused generation 1's container")
	}
	if got, err := readFile(t, f, second.ContainerID, "marker"); err != nil || got != "generation 1 was here" {
		t.Fatalf("marker in generation 3: %q, %v", got, err)
	}
	if err := f.p.Delete(f.ctx, ws, 4); err != nil {
		t.Fatal(err)
	}
	third, err := f.p.Provision(f.ctx, provisioner.Request{Workspace: ws, Generation: 5})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := readFile(t, f, third.ContainerID, "marker"); err == nil {
		t.Fatal("the marker outlived Delete")
	}
}

func TestFailureReasons(t *testing.T) {
	t.Run("ExitedShowsOutput", func(t *testing.T) {
		f := setup(t)
		_, err := f.p.Provision(f.ctx, provisioner.Request{Workspace: randomID("ws"), Generation: 1,
			Spec: fsm.Spec{Env: map[string]string{agent.EnvExitAfter: "0s", agent.EnvExitCode: "4"}}})
		r := provisioner.ReasonOf(err)
		if provisioner.CodeOf(err) != provisioner.CodeExited || !strings.Contains(r, "code 4") || !strings.Contains(r, "exiting at once") {
			t.Fatalf("reason %q: want the exit code and the container's last output", r)
		}
	})
	// A program that dies quoting a multi-line secret (a PEM key): the
	// tail of its output once started inside the key, whose last lines
	// the Redactor, matching the whole value, left in the reason.
	t.Run("MultiLineSecretRedacted", func(t *testing.T) {
		f := setup(t)
		bin := filepath.Join(t.TempDir(), "printer")
		cmd := exec.CommandContext(f.ctx, "go", "build", "-trimpath", "-o", bin, "./testdata/printer")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build printer: %v\n%s", err, out)
		}
		prog, err := os.ReadFile(bin)
		if err != nil {
			t.Fatal(err)
		}
		img := f.buildImage(t, "turnstile-agent-printer", "FROM "+f.image+"\nCOPY printer /printer\nENTRYPOINT [\"/printer\"]\n",
			map[string][]byte{"printer": prog})
		var lines []string
		for i := range 12 {
			lines = append(lines, strings.Repeat(string(rune('A'+i)), 60))
		}
		key := "-----BEGIN PRIVATE KEY-----\n" + strings.Join(lines, "\n") + "\n-----END PRIVATE KEY-----"
		spec := fsm.Spec{Image: img, Env: map[string]string{"KEY": "secret://key"}}
		resolved := spec.Clone()
		resolved.Env["KEY"] = key
		_, err = f.p.Provision(f.ctx, provisioner.Request{Workspace: randomID("ws"), Generation: 1, Spec: resolved,
			Redact: provisioner.NewRedactor(spec.SecretRefs(), resolved)})
		r := provisioner.ReasonOf(err)
		if provisioner.CodeOf(err) != provisioner.CodeExited || !strings.Contains(r, "fatal: cannot use key:\nsecret://key") {
			t.Errorf("reason %q: want the line before the key and the key redacted whole", r)
		}
		for _, l := range lines {
			if strings.Contains(r, l) {
				t.Errorf("the reason holds a line of the secret: %s", l)
			}
		}
	})
	t.Run("DockerRefusesSpec", func(t *testing.T) {
		f := setup(t)
		ws := randomID("ws")
		_, err := f.p.Provision(f.ctx, provisioner.Request{Workspace: ws, Generation: 1, Spec: fsm.Spec{CPUs: 1000}})
		if provisioner.CodeOf(err) != provisioner.CodeInvalid || !strings.Contains(provisioner.ReasonOf(err), "CPU") {
			t.Fatalf("Provision with 1000 CPUs: %v; want invalid with Docker's message", err)
		}
		if _, err := f.p.Inspect(f.ctx, ws); provisioner.CodeOf(err) == "" {
			t.Fatal("a refused spec left a container")
		}
	})
	t.Run("EntrypointMissing", func(t *testing.T) {
		f := setup(t)
		image := testenv.BuildImage(t, f.cli, "turnstile-agent-noentry", "FROM "+f.image+"\nENTRYPOINT [\"/nope\"]\n", nil)
		ws := randomID("ws")
		_, err := f.p.Provision(f.ctx, provisioner.Request{Workspace: ws, Generation: 1, Spec: fsm.Spec{Image: image}})
		if provisioner.CodeOf(err) != provisioner.CodeInvalid || !strings.Contains(provisioner.ReasonOf(err), "/nope") {
			t.Fatalf("Provision of an image without its entrypoint: %v; want invalid with Docker's message", err)
		}
		if _, err := f.p.Inspect(f.ctx, ws); provisioner.CodeOf(err) == "" {
			t.Fatal("a container that never started was left behind")
		}
	})
	t.Run("Unhealthy", func(t *testing.T) {
		f := setup(t)
		// The probe answers 503 at once; its generous timeout only keeps a
		// loaded machine's slow exec from turning "unhealthy with the
		// probe's output" into "health check exceeded timeout".
		image := testenv.BuildImage(t, f.cli, "turnstile-agent-impatient", "FROM "+f.image+
			"\nHEALTHCHECK --interval=100ms --timeout=30s --start-period=1ms --retries=1 CMD [\"/agent\", \"healthcheck\"]\n", nil)
		ws := randomID("ws")
		_, err := f.p.Provision(f.ctx, provisioner.Request{Workspace: ws, Generation: 1,
			Spec: fsm.Spec{Image: image, Env: map[string]string{agent.EnvStartDelay: "10m"}}})
		if provisioner.CodeOf(err) != provisioner.CodeUnhealthy || !strings.Contains(provisioner.ReasonOf(err), "503") {
			t.Fatalf("Provision of an image that never gets healthy: %v; want unhealthy with the probe's output", err)
		}
	})
	t.Run("NoImage", func(t *testing.T) {
		t.Parallel()
		p, err := docker.New(docker.Config{Client: testenv.Docker(t), Installation: randomID("inst"), Logger: quiet()})
		if err != nil {
			t.Fatal(err)
		}
		_, err = p.Provision(context.Background(), provisioner.Request{Workspace: "x", Generation: 1})
		if provisioner.CodeOf(err) != provisioner.CodeInvalid || !strings.Contains(provisioner.ReasonOf(err), "--image") {
			t.Fatalf("Provision without any image: %v", err)
		}
	})
}

func TestNew(t *testing.T) {
	cli := testenv.Docker(t)
	for name, cfg := range map[string]docker.Config{
		"NoClient":        {Installation: "a"},
		"NoInstallation":  {Client: cli},
		"BadInstallation": {Client: cli, Installation: "Not OK"},
		"BadDefaultImage": {Client: cli, Installation: "a", DefaultImage: "two words"},
	} {
		if _, err := docker.New(cfg); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := docker.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.Close()
}

// TestCancelAtAnyMoment cancels Provision at moments spread over its whole
// run (image check, create, start, health wait) and checks what the worker
// relies on: once the cancelled call has returned and the next action (a
// Stop of the next generation) has run, nothing of the cancelled
// generation runs, and nothing starts later.
func TestCancelAtAnyMoment(t *testing.T) {
	f := setup(t)
	ws := randomID("ws")
	spec := fsm.Spec{Env: map[string]string{agent.EnvStartDelay: "10m"}}
	gen := uint64(1)
	for i := range 7 {
		after := time.Duration(i) * 100 * time.Millisecond
		ctx, cancel := context.WithTimeout(f.ctx, after)
		_, err := f.p.Provision(ctx, provisioner.Request{Workspace: ws, Generation: gen, Spec: spec})
		cancel()
		if provisioner.CodeOf(err) != provisioner.CodeCanceled {
			t.Fatalf("cancel after %v: %v, want canceled", after, err)
		}
		if err := f.p.Stop(f.ctx, ws, gen+1); err != nil {
			t.Fatalf("Stop after a cancel at %v: %v", after, err)
		}
		for range 5 { // a late start in the daemon would show within this
			if in, err := f.p.Inspect(f.ctx, ws); err == nil && in.Running {
				t.Fatalf("cancel after %v: %+v runs after the next Stop", after, in)
			}
			time.Sleep(50 * time.Millisecond) // observation window, not synchronisation
		}
		gen += 2
	}
	// And the workspace still provisions normally afterwards.
	if _, err := f.p.Provision(f.ctx, provisioner.Request{Workspace: ws, Generation: gen}); err != nil {
		t.Fatal(err)
	}
}
