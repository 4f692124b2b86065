package provisionertest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/internal/agent"
	"github.com/turnstile-dev/turnstile/provisioner"
)

// Backend is what an implementation gives the suite for one test.
type Backend struct {
	// New returns a provisioner for installation whose default image is
	// Image and whose policy is policy. All provisioners New returns within
	// one test share one engine (as installations share a Docker host).
	// The backend removes everything labelled with installation when the
	// test ends.
	New func(t *testing.T, installation string, policy provisioner.Policy) provisioner.Provisioner
	// Image exists on the engine and runs internal/agent (or behaves as if).
	Image string
	// Kill makes the workspace's container exit as SIGKILL would (code 137),
	// behind the provisioner's back, and returns once it no longer runs.
	Kill func(t *testing.T, workspace string)
	// VolumeExists reports whether the workspace's volume exists. Required
	// with Features.Volumes.
	VolumeExists func(t *testing.T, workspace string) bool
	// Remove removes the workspace's container behind the provisioner's
	// back, as "docker rm -f" would (the volume stays). Required with
	// Features.Volumes.
	Remove func(t *testing.T, workspace string)
}

// Features says what a backend supports beyond the core contract.
type Features struct {
	// Volumes: the backend keeps a volume per workspace (Backend.VolumeExists).
	Volumes bool
	// AgentEnv: containers honour internal/agent's AGENT_START_DELAY,
	// AGENT_EXIT_AFTER and AGENT_EXIT_CODE.
	AgentEnv bool
}

// timeout bounds each test's calls.
const timeout = 90 * time.Second

// Run runs the contract suite. newBackend is called once per test.
func Run(t *testing.T, newBackend func(t *testing.T) Backend, f Features) {
	tests := []struct {
		name string
		need bool
		fn   func(*testing.T, *env)
	}{
		{"Provision/Runs", true, testProvisionRuns},
		{"Provision/SameGenerationAdopts", true, testSameGenerationAdopts},
		{"Provision/NewerGenerationReplaces", true, testNewerGenerationReplaces},
		{"Provision/OlderGenerationIsSuperseded", true, testOlderGenerationSuperseded},
		{"Provision/DefaultImage", true, testDefaultImage},
		{"Provision/Invalid", true, testInvalid},
		{"Provision/ImageNotFound", true, testImageNotFound},
		{"Policy/ImageNotAllowed", true, testImageNotAllowed},
		{"Policy/ProfileNotAllowed", true, testProfileNotAllowed},
		{"Policy/AllowedProfileRuns", true, testAllowedProfileRuns},
		{"Policy/LimitAboveMaximum", true, testLimitAboveMaximum},
		{"Provision/WaitsUntilReady", f.AgentEnv, testWaitsUntilReady},
		{"Provision/ExitAtOnceFails", f.AgentEnv, testExitAtOnce},
		{"Provision/CancelReturnsPromptly", f.AgentEnv, testCancel},
		{"Provision/CanceledBeforeStart", true, testCanceledBeforeStart},
		{"Stop/Twice", true, testStopTwice},
		{"Stop/OlderGenerationIsSuperseded", true, testStopSuperseded},
		{"Delete/RemovesContainerAndVolume", true, func(t *testing.T, e *env) { testDelete(t, e, f.Volumes) }},
		{"Volume/SurvivesNewGeneration", f.Volumes, testVolumeSurvives},
		{"List/OwnInstallationOnly", true, testListOwn},
		{"ListVolumes/OwnInstallationOnly", f.Volumes, testListVolumes},
		{"RemoveVolume/OnlyUnusedAndOwn", f.Volumes, testRemoveVolume},
		{"Installation/ForeignContainerNeverTouched", true, testForeign},
		{"Watch/ReportsExit", true, testWatchExit},
		{"Watch/ReportsRemoval", true, testWatchRemoval},
		{"Watch/EndsWithContext", true, testWatchEnds},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if !tc.need {
				t.Skip("backend lacks the feature")
			}
			t.Parallel()
			b := newBackend(t)
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			t.Cleanup(cancel)
			e := &env{b: b, ctx: ctx, installation: randomID("inst"), volumes: f.Volumes}
			e.p = b.New(t, e.installation, suitePolicy)
			tc.fn(t, e)
		})
	}
}

// suitePolicy is the policy of the suite's provisioners: the strict
// default, and the images the suite names (they need not exist).
var suitePolicy = provisioner.Policy{AllowedImages: []string{"turnstile-test/*"}}

// env is one test's backend, provisioner and context.
type env struct {
	b            Backend
	p            provisioner.Provisioner
	ctx          context.Context
	installation string
	volumes      bool
}

func randomID(prefix string) string { return fmt.Sprintf("%s-%08x", prefix, rand.Uint32()) }

// workspace returns a fresh workspace id, deleted through p when the test
// ends.
func (e *env) workspace(t *testing.T, ps ...provisioner.Provisioner) string {
	t.Helper()
	ws := randomID("pt")
	if len(ps) == 0 {
		ps = []provisioner.Provisioner{e.p}
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(e.ctx), 30*time.Second)
		defer cancel()
		for _, p := range ps {
			if err := p.Delete(ctx, ws, 1<<62); err != nil {
				t.Errorf("cleanup: delete %s: %v", ws, err)
			}
		}
	})
	return ws
}

func (e *env) spec(env ...string) fsm.Spec {
	s := fsm.Spec{Image: e.b.Image}
	if len(env) > 0 {
		s.Env = map[string]string{}
		for i := 0; i+1 < len(env); i += 2 {
			s.Env[env[i]] = env[i+1]
		}
	}
	return s
}

func (e *env) provision(t *testing.T, ws string, gen uint64, spec fsm.Spec) provisioner.Result {
	t.Helper()
	res, err := e.p.Provision(e.ctx, provisioner.Request{Workspace: ws, Generation: gen, Spec: spec})
	if err != nil {
		t.Fatalf("Provision(%s, gen %d): %v", ws, gen, err)
	}
	if res.ContainerID == "" {
		t.Fatalf("Provision(%s, gen %d): empty container id", ws, gen)
	}
	return res
}

func (e *env) inspect(t *testing.T, p provisioner.Provisioner, ws string) provisioner.Instance {
	t.Helper()
	in, err := p.Inspect(e.ctx, ws)
	if err != nil {
		t.Fatalf("Inspect(%s): %v", ws, err)
	}
	return in
}

func wantCode(t *testing.T, what string, err error, code provisioner.Code) *provisioner.Error {
	t.Helper()
	var pe *provisioner.Error
	if !errors.As(err, &pe) || pe.Code != code {
		t.Fatalf("%s: error %v (code %q), want code %q", what, err, provisioner.CodeOf(err), code)
	}
	if pe.Reason == "" {
		t.Fatalf("%s: error without a reason", what)
	}
	return pe
}

func wantNotFound(t *testing.T, p provisioner.Provisioner, ctx context.Context, ws string) {
	t.Helper()
	if in, err := p.Inspect(ctx, ws); !errors.Is(err, provisioner.ErrNotFound) {
		t.Fatalf("Inspect(%s): %+v, %v; want ErrNotFound", ws, in, err)
	}
}

// nextExit waits for the first exit on ch that matches.
func nextExit(t *testing.T, ch <-chan provisioner.Exit, within time.Duration, match func(provisioner.Exit) bool) provisioner.Exit {
	t.Helper()
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	for {
		select {
		case ex, ok := <-ch:
			if !ok {
				t.Fatal("watch channel closed early")
			}
			if match(ex) {
				return ex
			}
		case <-deadline.C:
			t.Fatalf("no matching exit within %v", within)
		}
	}
}

func testProvisionRuns(t *testing.T, e *env) {
	ws := e.workspace(t)
	res := e.provision(t, ws, 1, e.spec())
	if res.Adopted || res.Image != e.b.Image {
		t.Fatalf("result %+v: want a new container of %s", res, e.b.Image)
	}
	in := e.inspect(t, e.p, ws)
	if in.Workspace != ws || in.Generation != 1 || in.ContainerID != res.ContainerID || !in.Running || in.Image != e.b.Image {
		t.Fatalf("Inspect: %+v, want %s running generation 1 in %s", in, ws, res.ContainerID)
	}
}

func testSameGenerationAdopts(t *testing.T, e *env) {
	ws := e.workspace(t)
	first := e.provision(t, ws, 1, e.spec())
	again := e.provision(t, ws, 1, e.spec())
	if again.ContainerID != first.ContainerID || !again.Adopted {
		t.Fatalf("second Provision of generation 1: %+v, want the adopted %s", again, first.ContainerID)
	}
	// A container of the same generation that stopped is started again.
	e.b.Kill(t, ws)
	if in := e.inspect(t, e.p, ws); in.Running {
		t.Fatalf("after kill: %+v still running", in)
	}
	third := e.provision(t, ws, 1, e.spec())
	if third.ContainerID != first.ContainerID || !third.Adopted {
		t.Fatalf("Provision after kill: %+v, want the adopted %s", third, first.ContainerID)
	}
	if in := e.inspect(t, e.p, ws); !in.Running || in.Generation != 1 {
		t.Fatalf("after adopting a stopped container: %+v, want running generation 1", in)
	}
}

func testNewerGenerationReplaces(t *testing.T, e *env) {
	ws := e.workspace(t)
	old := e.provision(t, ws, 1, e.spec())
	res := e.provision(t, ws, 2, e.spec())
	if res.ContainerID == old.ContainerID || res.Adopted {
		t.Fatalf("generation 2: %+v, want a new container replacing %s", res, old.ContainerID)
	}
	in := e.inspect(t, e.p, ws)
	if in.Generation != 2 || in.ContainerID != res.ContainerID || !in.Running {
		t.Fatalf("Inspect: %+v, want running generation 2", in)
	}
	list, err := e.p.List(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, i := range list {
		if i.Workspace == ws {
			n++
			if i.ContainerID != res.ContainerID {
				t.Fatalf("List holds %s, want only %s", i.ContainerID, res.ContainerID)
			}
		}
	}
	if n != 1 {
		t.Fatalf("List holds %d containers of %s, want 1", n, ws)
	}
}

func testOlderGenerationSuperseded(t *testing.T, e *env) {
	ws := e.workspace(t)
	cur := e.provision(t, ws, 3, e.spec())
	_, err := e.p.Provision(e.ctx, provisioner.Request{Workspace: ws, Generation: 2, Spec: e.spec()})
	pe := wantCode(t, "Provision of generation 2 after 3", err, provisioner.CodeSuperseded)
	if !pe.Permanent() {
		t.Error("superseded should be permanent")
	}
	if in := e.inspect(t, e.p, ws); in.ContainerID != cur.ContainerID || in.Generation != 3 || !in.Running {
		t.Fatalf("after a stale Provision: %+v, want generation 3 untouched", in)
	}
}

func testDefaultImage(t *testing.T, e *env) {
	ws := e.workspace(t)
	res := e.provision(t, ws, 1, fsm.Spec{})
	if res.Image != e.b.Image {
		t.Fatalf("image %q, want the default %q", res.Image, e.b.Image)
	}
}

func testInvalid(t *testing.T, e *env) {
	for _, tc := range []struct {
		name string
		req  provisioner.Request
	}{
		{"BadID", provisioner.Request{Workspace: "Not_A_Label", Generation: 1, Spec: e.spec()}},
		{"EmptyID", provisioner.Request{Generation: 1, Spec: e.spec()}},
		{"GenerationZero", provisioner.Request{Workspace: randomID("pt"), Spec: e.spec()}},
		{"BadImage", provisioner.Request{Workspace: randomID("pt"), Generation: 1, Spec: fsm.Spec{Image: "two words"}}},
	} {
		_, err := e.p.Provision(e.ctx, tc.req)
		wantCode(t, tc.name, err, provisioner.CodeInvalid)
	}
	wantCode(t, "Stop generation 0", e.p.Stop(e.ctx, randomID("pt"), 0), provisioner.CodeInvalid)
	wantCode(t, "Delete bad id", e.p.Delete(e.ctx, "a.b", 1), provisioner.CodeInvalid)
	if _, err := e.p.Inspect(e.ctx, "*"); provisioner.CodeOf(err) != provisioner.CodeInvalid {
		t.Fatalf("Inspect(*): %v, want invalid", err)
	}
}

// testImageNotAllowed: issue 12 item 7. An image outside the policy fails
// before anything is made, with a reason naming the flag that allows it.
func testImageNotAllowed(t *testing.T, e *env) {
	p := e.b.New(t, e.installation, provisioner.Policy{})
	ws := e.workspace(t, p)
	image := "turnstile-test/elsewhere:" + randomID("never")
	_, err := p.Provision(e.ctx, provisioner.Request{Workspace: ws, Generation: 1, Spec: fsm.Spec{Image: image}})
	pe := wantCode(t, "Provision of an image outside the policy", err, provisioner.CodeNotAllowed)
	if !strings.Contains(pe.Reason, image) || !strings.Contains(pe.Reason, "--allowed-images") || !pe.Permanent() {
		t.Fatalf("reason %q (permanent %v): want the image and the flag", pe.Reason, pe.Permanent())
	}
	e.wantNothing(t, p, ws)
	// The default image, named or not, is always allowed.
	if _, err := p.Provision(e.ctx, provisioner.Request{Workspace: ws, Generation: 2, Spec: fsm.Spec{Image: e.b.Image}}); err != nil {
		t.Fatalf("Provision of the default image by name: %v", err)
	}
}

// testProfileNotAllowed: issue 12 item 7. A spec asking for a looser profile
// than serve allows fails before anything is made.
func testProfileNotAllowed(t *testing.T, e *env) {
	ws := e.workspace(t)
	spec := e.spec()
	spec.Profile = provisioner.ProfileStandard
	_, err := e.p.Provision(e.ctx, provisioner.Request{Workspace: ws, Generation: 1, Spec: spec})
	pe := wantCode(t, "Provision with a profile outside the policy", err, provisioner.CodeNotAllowed)
	if !strings.Contains(pe.Reason, "standard") || !strings.Contains(pe.Reason, "--allowed-profiles") {
		t.Fatalf("reason %q: want the profile and the flag", pe.Reason)
	}
	e.wantNothing(t, e.p, ws)
	spec.Profile = "privileged"
	_, err = e.p.Provision(e.ctx, provisioner.Request{Workspace: ws, Generation: 2, Spec: spec})
	wantCode(t, "Provision with a profile that does not exist", err, provisioner.CodeInvalid)
	e.wantNothing(t, e.p, ws)
}

// testAllowedProfileRuns: a looser profile the policy allows runs.
func testAllowedProfileRuns(t *testing.T, e *env) {
	pol := suitePolicy
	pol.AllowedProfiles = []string{provisioner.ProfileRestricted, provisioner.ProfileStandard}
	p := e.b.New(t, e.installation, pol)
	ws := e.workspace(t, p)
	spec := e.spec()
	spec.Profile = provisioner.ProfileStandard
	if _, err := p.Provision(e.ctx, provisioner.Request{Workspace: ws, Generation: 1, Spec: spec}); err != nil {
		t.Fatalf("Provision with an allowed profile: %v", err)
	}
	if in, err := p.Inspect(e.ctx, ws); err != nil || !in.Running {
		t.Fatalf("Inspect: %+v, %v; want it running", in, err)
	}
}

// testLimitAboveMaximum: a limit above the policy's maximum fails.
func testLimitAboveMaximum(t *testing.T, e *env) {
	pol := suitePolicy
	pol.MaxMemoryBytes, pol.MaxCPUs, pol.DefaultMemoryBytes = 256<<20, 1, 128<<20
	p := e.b.New(t, e.installation, pol)
	ws := e.workspace(t, p)
	for _, s := range []fsm.Spec{{MemoryBytes: 1 << 30}, {CPUs: 2}} {
		_, err := p.Provision(e.ctx, provisioner.Request{Workspace: ws, Generation: 1, Spec: s})
		wantCode(t, fmt.Sprintf("Provision of %+v", s), err, provisioner.CodeNotAllowed)
		e.wantNothing(t, p, ws)
	}
}

// wantNothing fails unless ws has neither container nor volume.
func (e *env) wantNothing(t *testing.T, p provisioner.Provisioner, ws string) {
	t.Helper()
	wantNotFound(t, p, e.ctx, ws)
	if e.volumes && e.b.VolumeExists(t, ws) {
		t.Fatalf("a refused provision of %s made its volume", ws)
	}
}

func testImageNotFound(t *testing.T, e *env) {
	ws := e.workspace(t)
	image := "turnstile-test/missing:" + randomID("never")
	_, err := e.p.Provision(e.ctx, provisioner.Request{Workspace: ws, Generation: 1, Spec: fsm.Spec{Image: image}})
	pe := wantCode(t, "Provision of a missing image", err, provisioner.CodeImageNotFound)
	if !strings.Contains(pe.Reason, image) || !strings.Contains(pe.Reason, "build it locally") || !pe.Permanent() {
		t.Fatalf("reason %q (permanent %v): want the image and what to do", pe.Reason, pe.Permanent())
	}
	wantNotFound(t, e.p, e.ctx, ws)
}

func testWaitsUntilReady(t *testing.T, e *env) {
	ws := e.workspace(t)
	const delay = 800 * time.Millisecond
	began := time.Now()
	e.provision(t, ws, 1, e.spec(agent.EnvStartDelay, delay.String()))
	if el := time.Since(began); el < delay {
		t.Fatalf("Provision returned after %v, before the agent was ready (%v)", el, delay)
	}
	if in := e.inspect(t, e.p, ws); !in.Running {
		t.Fatalf("after Provision: %+v, want running", in)
	}
}

func testExitAtOnce(t *testing.T, e *env) {
	ws := e.workspace(t)
	_, err := e.p.Provision(e.ctx, provisioner.Request{Workspace: ws, Generation: 1,
		Spec: e.spec(agent.EnvExitAfter, "0s", agent.EnvExitCode, "3")})
	pe := wantCode(t, "Provision of an image that exits at once", err, provisioner.CodeExited)
	if !strings.Contains(pe.Reason, "code 3") {
		t.Fatalf("reason %q: want the exit code", pe.Reason)
	}
	if in, err := e.p.Inspect(e.ctx, ws); err == nil && in.Running {
		t.Fatalf("after the failure: %+v is running", in)
	}
}

func testCancel(t *testing.T, e *env) {
	ws := e.workspace(t)
	ctx, cancel := context.WithTimeout(e.ctx, 700*time.Millisecond)
	defer cancel()
	began := time.Now()
	_, err := e.p.Provision(ctx, provisioner.Request{Workspace: ws, Generation: 1, Spec: e.spec(agent.EnvStartDelay, "10m")})
	if el := time.Since(began); el > 15*time.Second {
		t.Fatalf("cancelled Provision took %v", el)
	}
	if !errors.Is(err, context.DeadlineExceeded) || provisioner.CodeOf(err) != provisioner.CodeCanceled {
		t.Fatalf("cancelled Provision: %v, want canceled wrapping context.DeadlineExceeded", err)
	}
	if in, err := e.p.Inspect(e.ctx, ws); err == nil && in.Running && in.Generation == 1 {
		t.Fatalf("after cancel: %+v still running generation 1", in)
	}
	// The next action of a newer generation finds nothing in its way.
	if err := e.p.Stop(e.ctx, ws, 2); err != nil {
		t.Fatal(err)
	}
	e.provision(t, ws, 3, e.spec())
}

func testCanceledBeforeStart(t *testing.T, e *env) {
	ws := e.workspace(t)
	ctx, cancel := context.WithCancel(e.ctx)
	cancel()
	_, err := e.p.Provision(ctx, provisioner.Request{Workspace: ws, Generation: 1, Spec: e.spec()})
	if !errors.Is(err, context.Canceled) || provisioner.CodeOf(err) != provisioner.CodeCanceled {
		t.Fatalf("Provision with a cancelled context: %v, want canceled", err)
	}
	wantNotFound(t, e.p, e.ctx, ws)
}

func testStopTwice(t *testing.T, e *env) {
	ws := e.workspace(t)
	res := e.provision(t, ws, 1, e.spec())
	began := time.Now()
	if err := e.p.Stop(e.ctx, ws, 2); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if el := time.Since(began); el > 5*time.Second {
		t.Errorf("Stop took %v: does the container end promptly on SIGTERM?", el)
	}
	in := e.inspect(t, e.p, ws)
	if in.Running || in.ContainerID != res.ContainerID || in.ExitCode != 0 {
		t.Fatalf("after Stop: %+v, want the same container stopped with exit code 0", in)
	}
	if err := e.p.Stop(e.ctx, ws, 2); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	if err := e.p.Stop(e.ctx, e.workspace(t), 1); err != nil {
		t.Fatalf("Stop of a workspace without a container: %v", err)
	}
}

func testStopSuperseded(t *testing.T, e *env) {
	ws := e.workspace(t)
	res := e.provision(t, ws, 3, e.spec())
	wantCode(t, "Stop of generation 2 after 3", e.p.Stop(e.ctx, ws, 2), provisioner.CodeSuperseded)
	wantCode(t, "Delete of generation 2 after 3", e.p.Delete(e.ctx, ws, 2), provisioner.CodeSuperseded)
	if in := e.inspect(t, e.p, ws); !in.Running || in.ContainerID != res.ContainerID {
		t.Fatalf("after stale Stop and Delete: %+v, want generation 3 running", in)
	}
}

func testDelete(t *testing.T, e *env, volumes bool) {
	ws := e.workspace(t)
	e.provision(t, ws, 1, e.spec())
	if volumes && !e.b.VolumeExists(t, ws) {
		t.Fatal("no volume after Provision")
	}
	if err := e.p.Delete(e.ctx, ws, 2); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	wantNotFound(t, e.p, e.ctx, ws)
	if volumes && e.b.VolumeExists(t, ws) {
		t.Fatal("volume left after Delete")
	}
	if err := e.p.Delete(e.ctx, ws, 2); err != nil {
		t.Fatalf("second Delete: %v", err)
	}
	if err := e.p.Delete(e.ctx, e.workspace(t), 1); err != nil {
		t.Fatalf("Delete of a workspace that never existed: %v", err)
	}
	// A deleted workspace can be created again; generations go on.
	e.provision(t, ws, 3, e.spec())
}

func testVolumeSurvives(t *testing.T, e *env) {
	ws := e.workspace(t)
	e.provision(t, ws, 1, e.spec())
	if err := e.p.Stop(e.ctx, ws, 2); err != nil {
		t.Fatal(err)
	}
	e.provision(t, ws, 3, e.spec())
	if !e.b.VolumeExists(t, ws) {
		t.Fatal("volume gone after stop and a new generation")
	}
}

func testListOwn(t *testing.T, e *env) {
	other := e.b.New(t, randomID("inst"), suitePolicy)
	mine, theirs := e.workspace(t), e.workspace(t, other)
	e.provision(t, mine, 1, e.spec())
	if _, err := other.Provision(e.ctx, provisioner.Request{Workspace: theirs, Generation: 1, Spec: e.spec()}); err != nil {
		t.Fatal(err)
	}
	list, err := e.p.List(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].Workspace != mine || list[0].Generation != 1 || !list[0].Running {
		t.Fatalf("List: %+v, want only %s running generation 1", list, mine)
	}
	wantNotFound(t, e.p, e.ctx, theirs)
}

func testListVolumes(t *testing.T, e *env) {
	if vs, err := e.p.ListVolumes(e.ctx); err != nil || len(vs) != 0 {
		t.Fatalf("ListVolumes of a fresh installation: %+v, %v; want none", vs, err)
	}
	other := e.b.New(t, randomID("inst"), suitePolicy)
	mine, theirs := e.workspace(t), e.workspace(t, other)
	e.provision(t, mine, 1, e.spec())
	if _, err := other.Provision(e.ctx, provisioner.Request{Workspace: theirs, Generation: 1, Spec: e.spec()}); err != nil {
		t.Fatal(err)
	}
	// A stopped workspace keeps its volume, and it is listed.
	if err := e.p.Stop(e.ctx, mine, 2); err != nil {
		t.Fatal(err)
	}
	want := provisioner.VolumeInfo{Workspace: mine, Name: provisioner.VolumeName(mine)}
	if vs, err := e.p.ListVolumes(e.ctx); err != nil || len(vs) != 1 || vs[0] != want {
		t.Fatalf("ListVolumes: %+v, %v; want only %+v", vs, err, want)
	}
	if vs, err := other.ListVolumes(e.ctx); err != nil || len(vs) != 1 || vs[0].Workspace != theirs {
		t.Fatalf("the other installation's ListVolumes: %+v, %v; want only %s's", vs, err, theirs)
	}
	if err := e.p.Delete(e.ctx, mine, 3); err != nil {
		t.Fatal(err)
	}
	if vs, err := e.p.ListVolumes(e.ctx); err != nil || len(vs) != 0 {
		t.Fatalf("ListVolumes after Delete: %+v, %v; want none", vs, err)
	}
}

func testRemoveVolume(t *testing.T, e *env) {
	ws := e.workspace(t)
	res := e.provision(t, ws, 1, e.spec())
	if err := e.p.RemoveVolume(e.ctx, ws); provisioner.CodeOf(err) != provisioner.CodeEngine || provisioner.ReasonOf(err) == "" {
		t.Fatalf("RemoveVolume of a running workspace: %v, want an engine error saying it is in use", err)
	}
	if err := e.p.Stop(e.ctx, ws, 2); err != nil {
		t.Fatal(err)
	}
	if err := e.p.RemoveVolume(e.ctx, ws); err == nil {
		t.Fatal("RemoveVolume removed the volume of a stopped container")
	}
	if in := e.inspect(t, e.p, ws); in.ContainerID != res.ContainerID || !e.b.VolumeExists(t, ws) {
		t.Fatalf("after refused removals: %+v, volume %v; want both untouched", in, e.b.VolumeExists(t, ws))
	}
	// Its container gone, the volume is a leftover: it goes.
	e.b.Remove(t, ws)
	if err := e.p.RemoveVolume(e.ctx, ws); err != nil {
		t.Fatalf("RemoveVolume of a leftover volume: %v", err)
	}
	if e.b.VolumeExists(t, ws) {
		t.Fatal("leftover volume still there")
	}
	if err := e.p.RemoveVolume(e.ctx, ws); err != nil {
		t.Fatalf("RemoveVolume of a volume already gone: %v", err)
	}
	// Another installation's leftover volume is left alone.
	other := e.b.New(t, randomID("inst"), suitePolicy)
	theirs := e.workspace(t, other)
	if _, err := other.Provision(e.ctx, provisioner.Request{Workspace: theirs, Generation: 1, Spec: e.spec()}); err != nil {
		t.Fatal(err)
	}
	e.b.Remove(t, theirs)
	if err := e.p.RemoveVolume(e.ctx, theirs); err != nil {
		t.Fatalf("RemoveVolume of another installation's volume: %v, want nil (nothing of ours)", err)
	}
	if !e.b.VolumeExists(t, theirs) {
		t.Fatal("another installation's volume was removed")
	}
	wantCode(t, "RemoveVolume of a bad id", e.p.RemoveVolume(e.ctx, "a.b"), provisioner.CodeInvalid)
}

func testForeign(t *testing.T, e *env) {
	otherID := randomID("inst")
	other := e.b.New(t, otherID, suitePolicy)
	ws := e.workspace(t, other)
	theirs, err := other.Provision(e.ctx, provisioner.Request{Workspace: ws, Generation: 5, Spec: e.spec()})
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.p.Provision(e.ctx, provisioner.Request{Workspace: ws, Generation: 9, Spec: e.spec()})
	pe := wantCode(t, "Provision over another installation's container", err, provisioner.CodeNameTaken)
	if !strings.Contains(pe.Reason, provisioner.ContainerName(ws)) || !strings.Contains(pe.Reason, otherID) || !pe.Permanent() {
		t.Fatalf("reason %q: want the container name and the owner %s", pe.Reason, otherID)
	}
	if err := e.p.Stop(e.ctx, ws, 9); err != nil {
		t.Fatalf("Stop of a foreign container: %v, want nil (nothing of ours)", err)
	}
	if err := e.p.Delete(e.ctx, ws, 9); err != nil {
		t.Fatalf("Delete of a foreign container: %v, want nil (nothing of ours)", err)
	}
	wantNotFound(t, e.p, e.ctx, ws)
	if in := e.inspect(t, other, ws); !in.Running || in.ContainerID != theirs.ContainerID || in.Generation != 5 {
		t.Fatalf("the other installation's container: %+v, want it untouched", in)
	}
	if e.b.VolumeExists != nil && !e.b.VolumeExists(t, ws) {
		t.Fatal("the other installation's volume is gone")
	}
}

func testWatchExit(t *testing.T, e *env) {
	ctx, cancel := context.WithCancel(e.ctx)
	defer cancel()
	ch, err := e.p.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ws := e.workspace(t)
	res := e.provision(t, ws, 4, e.spec())
	e.b.Kill(t, ws)
	ex := nextExit(t, ch, 30*time.Second, func(x provisioner.Exit) bool { return x.Workspace == ws })
	if ex.Generation != 4 || ex.ContainerID != res.ContainerID || ex.Removed || ex.ExitCode == nil || *ex.ExitCode != 137 {
		t.Fatalf("exit %+v, want generation 4, container %s, code 137", ex, res.ContainerID)
	}
}

func testWatchRemoval(t *testing.T, e *env) {
	ctx, cancel := context.WithCancel(e.ctx)
	defer cancel()
	ch, err := e.p.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ws := e.workspace(t)
	res := e.provision(t, ws, 1, e.spec())
	if err := e.p.Delete(e.ctx, ws, 2); err != nil {
		t.Fatal(err)
	}
	ex := nextExit(t, ch, 30*time.Second, func(x provisioner.Exit) bool { return x.Workspace == ws && x.Removed })
	if ex.Generation != 1 || ex.ContainerID != res.ContainerID || ex.ExitCode != nil {
		t.Fatalf("removal %+v, want generation 1, container %s, no exit code", ex, res.ContainerID)
	}
}

func testWatchEnds(t *testing.T, e *env) {
	ctx, cancel := context.WithCancel(e.ctx)
	ch, err := e.p.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return
			}
		case <-deadline.C:
			t.Fatal("Watch channel still open 10s after its context ended")
		}
	}
}
