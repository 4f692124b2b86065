package docker_test

import (
	"bytes"
	"context"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/image"

	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/internal/testenv"
	"github.com/turnstile-dev/turnstile/provisioner"
)

// exec runs cmd in container id as its user and returns its exit code and
// output. The agent image has no shell: cmd is the agent binary.
func (f *fixture) exec(t *testing.T, id string, cmd ...string) (int, string) {
	t.Helper()
	created, err := f.cli.ContainerExecCreate(f.ctx, id, container.ExecOptions{Cmd: cmd, AttachStdout: true, AttachStderr: true})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := f.cli.ContainerExecAttach(f.ctx, created.ID, container.ExecAttachOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	_, err = io.Copy(&out, resp.Reader) // until the process ends
	resp.Close()
	if err != nil {
		t.Fatal(err)
	}
	st, err := f.cli.ContainerExecInspect(f.ctx, created.ID)
	if err != nil || st.Running {
		t.Fatalf("exec %v: %+v, %v; want it ended", cmd, st, err)
	}
	return st.ExitCode, out.String()
}

func (f *fixture) inspect(t *testing.T, id string) container.InspectResponse {
	t.Helper()
	c, err := f.cli.ContainerInspect(f.ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestRestrictedProfile: issue 12 item 7. With no policy given, a
// workspace's container runs with no capabilities, no privilege gain, a
// read-only root filesystem, as nobody, within default memory, CPU and
// process limits; its agent still becomes healthy and can write to its
// volume and /tmp, and to nothing else.
func TestRestrictedProfile(t *testing.T) {
	f := setup(t)
	ws := randomID("ws")
	res, err := f.p.Provision(f.ctx, provisioner.Request{Workspace: ws, Generation: 1})
	if err != nil {
		t.Fatal(err)
	}
	c := f.inspect(t, res.ContainerID)
	hc := c.HostConfig
	if !slices.Equal(hc.CapDrop, []string{"ALL"}) || len(hc.CapAdd) != 0 {
		t.Errorf("capabilities: drop %v, add %v; want all dropped, none added", hc.CapDrop, hc.CapAdd)
	}
	if !slices.Contains(hc.SecurityOpt, "no-new-privileges:true") {
		t.Errorf("security options %v lack no-new-privileges", hc.SecurityOpt)
	}
	if !hc.ReadonlyRootfs {
		t.Error("the root filesystem is writable")
	}
	if tmp := hc.Tmpfs[provisioner.TmpPath]; !strings.Contains(tmp, "noexec") || !strings.Contains(tmp, "nosuid") ||
		!strings.Contains(tmp, "size=67108864") {
		t.Errorf("tmpfs %v: want a 64 MiB noexec, nosuid /tmp", hc.Tmpfs)
	}
	if hc.PidsLimit == nil || *hc.PidsLimit != 512 || hc.Memory != 512<<20 || hc.MemorySwap != 512<<20 || hc.NanoCPUs != 1e9 {
		t.Errorf("limits: pids %v, memory %d (swap %d), nano cpus %d; want 512, 512 MiB without swap, 1 CPU",
			hc.PidsLimit, hc.Memory, hc.MemorySwap, hc.NanoCPUs)
	}
	if provisioner.IsRootUser(c.Config.User) {
		t.Errorf("user %q: want not root", c.Config.User)
	}
	if c.Config.Labels[provisioner.LabelProfile] != provisioner.ProfileRestricted {
		t.Errorf("labels %v: want %s=restricted", c.Config.Labels, provisioner.LabelProfile)
	}
	if c.State.Health == nil || c.State.Health.Status != container.Healthy {
		t.Errorf("health %+v: want healthy", c.State.Health)
	}
	if code, out := f.exec(t, res.ContainerID, "/agent", "writable", provisioner.DataPath, provisioner.TmpPath); code != 0 {
		t.Errorf("the agent cannot write to its volume and /tmp: exit %d: %s", code, out)
	}
	if code, out := f.exec(t, res.ContainerID, "/agent", "writable", "/"); code == 0 {
		t.Errorf("the agent can write to / (read-only root filesystem expected): %s", out)
	}
}

// TestRestrictedRunsRootImageAsNobody: issue 12 item 7. An image that would
// run as root runs as nobody under the restricted profile, and as root
// under standard, which keeps Docker's default capabilities but NET_RAW
// and MKNOD and a writable root filesystem.
func TestRestrictedRunsRootImageAsNobody(t *testing.T) {
	f := setup(t)
	rootImage := testenv.BuildImage(t, f.cli, "turnstile-agent-root", "FROM "+f.image+"\nUSER 0:0\n", nil)
	pol := testPolicy
	pol.AllowedProfiles = []string{provisioner.ProfileRestricted, provisioner.ProfileStandard}
	p := mustNewPolicy(t, f.cli, f.installation, f.image, pol)

	ws := randomID("ws")
	res, err := p.Provision(f.ctx, provisioner.Request{Workspace: ws, Generation: 1, Spec: fsm.Spec{Image: rootImage}})
	if err != nil {
		t.Fatal(err)
	}
	if u := f.inspect(t, res.ContainerID).Config.User; u != provisioner.NonRootUser {
		t.Errorf("restricted user %q, want %s", u, provisioner.NonRootUser)
	}

	ws = randomID("ws")
	res, err = p.Provision(f.ctx, provisioner.Request{Workspace: ws, Generation: 1,
		Spec: fsm.Spec{Image: rootImage, Profile: provisioner.ProfileStandard}})
	if err != nil {
		t.Fatal(err)
	}
	c := f.inspect(t, res.ContainerID)
	hc := c.HostConfig
	if !provisioner.IsRootUser(c.Config.User) || hc.ReadonlyRootfs || len(hc.Tmpfs) != 0 {
		t.Errorf("standard: user %q, read-only %v, tmpfs %v; want the image's root, a writable root filesystem",
			c.Config.User, hc.ReadonlyRootfs, hc.Tmpfs)
	}
	added := make([]string, 0, len(hc.CapAdd))
	for _, c := range hc.CapAdd {
		added = append(added, strings.TrimPrefix(c, "CAP_")) // engines differ in how they show them
	}
	if !slices.Equal(hc.CapDrop, []string{"ALL"}) || !slices.Contains(added, "CHOWN") ||
		slices.Contains(added, "NET_RAW") || slices.Contains(added, "MKNOD") || slices.Contains(added, "SYS_ADMIN") {
		t.Errorf("standard capabilities: drop %v, add %v", hc.CapDrop, hc.CapAdd)
	}
	if !slices.Contains(hc.SecurityOpt, "no-new-privileges:true") || hc.PidsLimit == nil || *hc.PidsLimit != 512 {
		t.Errorf("standard: security options %v, pids %v", hc.SecurityOpt, hc.PidsLimit)
	}
	if c.Config.Labels[provisioner.LabelProfile] != provisioner.ProfileStandard {
		t.Errorf("labels %v: want %s=standard", c.Config.Labels, provisioner.LabelProfile)
	}
	if code, out := f.exec(t, res.ContainerID, "/agent", "writable", "/", provisioner.DataPath); code != 0 {
		t.Errorf("standard: root cannot write to / and its volume: exit %d: %s", code, out)
	}
}

// buildImage builds a variant of the agent image for this test alone and
// removes it when the test ends, after the installation's containers (a
// running container holds its image).
func (f *fixture) buildImage(t *testing.T, repo, dockerfile string, files map[string][]byte) string {
	t.Helper()
	img := testenv.BuildImage(t, f.cli, repo, dockerfile, files)
	t.Cleanup(func() {
		removeInstallation(t, f.cli, f.installation)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if _, err := f.cli.ImageRemove(ctx, img, image.RemoveOptions{PruneChildren: true}); err != nil && !cerrdefs.IsNotFound(err) {
			t.Errorf("cleanup: remove image %s: %v", img, err)
		}
	})
	return img
}

// TestRestrictedRunsSignedZeroAsNobody: the engine reads USER +0 as uid 0
// (strconv.Atoi), so restricted must run such an image as nobody too; it
// once took "+0" for a user name and let runc start the process as root.
func TestRestrictedRunsSignedZeroAsNobody(t *testing.T) {
	f := setup(t)
	img := f.buildImage(t, "turnstile-agent-plus0", "FROM "+f.image+"\nUSER +0:+0\n", nil)
	res, err := f.p.Provision(f.ctx, provisioner.Request{Workspace: randomID("ws"), Generation: 1, Spec: fsm.Spec{Image: img}})
	if err != nil {
		t.Fatal(err)
	}
	if u := f.inspect(t, res.ContainerID).Config.User; u != provisioner.NonRootUser {
		t.Errorf("user %q, want %s", u, provisioner.NonRootUser)
	}
	top, err := f.cli.ContainerTop(f.ctx, res.ContainerID, []string{"-o", "pid,uid,comm"}) // the engine needs pid
	col := slices.Index(top.Titles, "UID")
	if err != nil || col < 0 || len(top.Processes) == 0 {
		t.Fatalf("top: %+v, %v", top, err)
	}
	for _, p := range top.Processes {
		if uid := strings.TrimSpace(p[col]); uid != "65534" {
			t.Errorf("process %v runs as uid %s, want 65534", p, uid)
		}
	}
}

// TestTinyCPUsRefused: Docker enforces no CPU limit below 0.01 CPU. 1e-10
// was sent as NanoCPUs 0 and 4e-6 as a CFS quota of 0: both ran with no
// limit at all, past --max-cpus. They are refused before anything is
// made. (0.01 itself is sent as 1e7, TestPolicyPlan/SmallestCPULimit; an
// agent at 0.01 CPU takes minutes to get healthy, too slow to run here.)
func TestTinyCPUsRefused(t *testing.T) {
	f := setup(t)
	pol := testPolicy
	pol.MaxCPUs = 1
	p := mustNewPolicy(t, f.cli, f.installation, f.image, pol)
	for _, cpus := range []float64{1e-10, 4e-6, 0.004} {
		ws := randomID("ws")
		res, err := p.Provision(f.ctx, provisioner.Request{Workspace: ws, Generation: 1, Spec: fsm.Spec{CPUs: cpus}})
		if provisioner.CodeOf(err) != provisioner.CodeInvalid || !strings.Contains(provisioner.ReasonOf(err), "below 0.01") {
			t.Errorf("cpus %v: %+v, %v; want invalid, below 0.01", cpus, res, err)
		}
		if _, err := p.Inspect(f.ctx, ws); provisioner.CodeOf(err) == "" {
			t.Errorf("cpus %v: a refused spec left a container", cpus)
		}
	}
}

// TestImageByIDPrefixRefused: issue 12 item 7. Docker reads a name it has
// no tag for as a prefix of an image id; an allowed pattern that matches
// such a name must not run whatever local image has that id.
func TestImageByIDPrefixRefused(t *testing.T) {
	f := setup(t)
	img, err := f.cli.ImageInspect(f.ctx, f.image)
	if err != nil {
		t.Fatal(err)
	}
	prefix := strings.TrimPrefix(img.ID, "sha256:")[:12]
	p := mustNewPolicy(t, f.cli, f.installation, "", provisioner.Policy{AllowedImages: []string{"*"}})
	ws := randomID("ws")
	_, err = p.Provision(f.ctx, provisioner.Request{Workspace: ws, Generation: 1, Spec: fsm.Spec{Image: prefix}})
	if provisioner.CodeOf(err) != provisioner.CodeNotAllowed || !strings.Contains(provisioner.ReasonOf(err), "not a name") {
		t.Fatalf("Provision of image %s (an id prefix): %v; want not_allowed", prefix, err)
	}
	if _, err := p.Inspect(f.ctx, ws); provisioner.CodeOf(err) == "" {
		t.Fatal("a refused image left a container")
	}
}
