package reliability_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"

	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/internal/testenv"
	"github.com/turnstile-dev/turnstile/provisioner"
)

// dockerServe starts serve on Docker for d's installation, with a
// throwaway PostgreSQL, deadlines of deadline and env, and a client on its
// embedded NATS.
func dockerServe(t *testing.T, d *dockerEnv, deadline time.Duration, env ...string) (s *serve, rec *cmdRecorder, natsURL, dbURL string) {
	t.Helper()
	pg := testenv.StartPostgres(t)
	dbURL = pg.NewDatabase(t)
	s = startServe(t, serveOptions{databaseURL: dbURL, provisioner: "docker", env: append(d.serveEnv(deadline), env...)})
	natsURL = fmt.Sprintf("nats://127.0.0.1:%d", s.natsPort)
	return s, newCmdRecorder(newClient(t, connect(t, natsURL, "reliability-docker"))), natsURL, dbURL
}

// deleteAllAndCheck deletes every workspace, checks that Docker holds
// nothing of the installation any more, waits until the system is quiet
// and runs the package's checks; it returns what checkStream counted.
func deleteAllAndCheck(t *testing.T, d *dockerEnv, rec *cmdRecorder, natsURL, dbURL, dataDir string, ids []string) streamFigures {
	t.Helper()
	store := rec.cl.Store()
	for _, id := range ids {
		rec.mustSend(t, fsm.Command{Type: fsm.Delete, Workspace: id}, fsm.Accepted)
	}
	for _, id := range ids {
		if st := settleWorkspace(t, store, id, 3*time.Minute); st.Status != fsm.Deleted {
			t.Errorf("workspace %s ended %s after delete (%q)", id, st.Status, st.LastError)
		}
	}
	if cs, vs := d.inventory(t); len(cs)+len(vs) > 0 {
		for _, c := range cs {
			t.Errorf("container %v (%s, generation %s) is left after every workspace was deleted", c.Names, c.State, c.Labels[provisioner.LabelGeneration])
		}
		for _, v := range vs {
			t.Errorf("volume %s is left after every workspace was deleted", v.Name)
		}
	}
	waitQuiet(t, rec.cl, dbURL, ids, 2*time.Minute)
	f := checkStream(t, rec.cl, rec.commands())
	checkAuditCLI(t, natsURL)
	checkRebuild(t, natsURL, dbURL, dataDir)
	return f
}

// failedBy fails the test unless e is of type want.
func failedBy(t *testing.T, e events.Envelope, want fsm.EventType) {
	t.Helper()
	if e.Type != want {
		t.Errorf("workspace %s failed by %s (%q), want %s", e.Workspace, e.Type, e.Payload.Reason, want)
	}
}

// recoverWorkspace sends cmds (each must be accepted) and checks that the
// workspace then runs its current generation on Docker.
func recoverWorkspace(t *testing.T, d *dockerEnv, rec *cmdRecorder, id string, cmds ...fsm.Command) fsm.Workspace {
	t.Helper()
	for _, c := range cmds {
		c.Workspace = id
		rec.mustSend(t, c, fsm.Accepted)
	}
	st := settleWorkspace(t, rec.cl.Store(), id, 2*time.Minute)
	if st.Status != fsm.Running {
		t.Fatalf("workspace %s did not recover: %s at generation %d (%q)", id, st.Status, st.Generation, st.LastError)
	}
	d.checkRunning(t, rec.cl.Store(), []string{id})
	return st
}

// TestDockerFaults runs serve on Docker and injects the faults of a
// container's own making: its container removed from outside, an image
// that does not exist, and images that exit at once or while running. Each
// workspace must end failed with a reason that names the cause, in the
// stream and in the read model, and a later user command must bring it
// back to running on a container of its current generation. At the end
// every workspace is deleted, Docker must hold nothing of the
// installation, and the package's checks run.
func TestDockerFaults(t *testing.T) {
	gate(t)
	begin := time.Now()
	d := newDockerEnv(t)
	s, rec, natsURL, dbURL := dockerServe(t, d, 2*time.Minute)
	store := rec.cl.Store()
	ws := func(name string) string { return name + "-" + d.suffix }
	ids := []string{ws("removed"), ws("noimage"), ws("exit-now"), ws("exit-later")}

	t.Run("faults", func(t *testing.T) {
		t.Run("ContainerRemoved", func(t *testing.T) {
			t.Parallel()
			id := ws("removed")
			rec.mustSend(t, fsm.Command{Type: fsm.Create, Workspace: id}, fsm.Accepted)
			if st := settleWorkspace(t, store, id, 2*time.Minute); st.Status != fsm.Running {
				t.Fatalf("%s: %s (%q), want running", id, st.Status, st.LastError)
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			vol, err := d.cli.VolumeInspect(ctx, provisioner.VolumeName(id))
			if err != nil {
				t.Fatal(err)
			}
			// The fault: `docker rm -f` from outside.
			if err := d.cli.ContainerRemove(ctx, provisioner.ContainerName(id), container.RemoveOptions{Force: true}); err != nil {
				t.Fatal(err)
			}
			// The watcher reports it at once; the reconciler (every minute) would too.
			st := waitWorkspaceStatus(t, store, id, fsm.Failed, 90*time.Second)
			failedBy(t, checkFailed(t, s, store, st, "container exited"), fsm.ContainerExitedEv)
			recoverWorkspace(t, d, rec, id, fsm.Command{Type: fsm.Start})
			again, err := d.cli.VolumeInspect(ctx, provisioner.VolumeName(id))
			if err != nil || again.CreatedAt != vol.CreatedAt {
				t.Errorf("volume %s did not survive: created %s before, now %s (%v)", vol.Name, vol.CreatedAt, again.CreatedAt, err)
			}
		})
		t.Run("MissingImage", func(t *testing.T) {
			t.Parallel()
			id := ws("noimage")
			missing := "turnstile-reliability-missing-" + d.suffix + ":none"
			rec.mustSend(t, fsm.Command{Type: fsm.Create, Workspace: id, Spec: &fsm.Spec{Image: missing}}, fsm.Accepted)
			st := settleWorkspace(t, store, id, 2*time.Minute)
			failedBy(t, checkFailed(t, s, store, st, "image not found", missing), fsm.ProvisionFailedEv)
			// configure keeps failed (applied at the next start); start applies it.
			recoverWorkspace(t, d, rec, id, fsm.Command{Type: fsm.Configure, Spec: &fsm.Spec{Image: d.image}}, fsm.Command{Type: fsm.Start})
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if c, err := d.cli.ContainerInspect(ctx, provisioner.ContainerName(id)); err != nil || c.Config.Image != d.image {
				t.Errorf("%s runs %v, want %s (%v)", id, c.Config, d.image, err)
			}
		})
		t.Run("ExitsAtOnce", func(t *testing.T) {
			t.Parallel()
			id := ws("exit-now")
			env := map[string]string{"AGENT_EXIT_AFTER": "0s", "AGENT_EXIT_CODE": "1"}
			rec.mustSend(t, fsm.Command{Type: fsm.Create, Workspace: id, Spec: &fsm.Spec{Env: env}}, fsm.Accepted)
			st := settleWorkspace(t, store, id, 2*time.Minute)
			failedBy(t, checkFailed(t, s, store, st, "exited with code 1 before it was ready"), fsm.ProvisionFailedEv)
			recoverWorkspace(t, d, rec, id, fsm.Command{Type: fsm.Configure, Spec: &fsm.Spec{}}, fsm.Command{Type: fsm.Restart})
		})
		t.Run("ExitsWhileRunning", func(t *testing.T) {
			t.Parallel()
			id := ws("exit-later")
			// Long enough to be healthy (checked every 250 ms) first on a
			// loaded machine; the exit is what is under test.
			env := map[string]string{"AGENT_EXIT_AFTER": "30s", "AGENT_EXIT_CODE": "3"}
			rec.mustSend(t, fsm.Command{Type: fsm.Create, Workspace: id, Spec: &fsm.Spec{Env: env}}, fsm.Accepted)
			running := settleWorkspace(t, store, id, 2*time.Minute)
			if running.Status != fsm.Running {
				t.Fatalf("%s: %s (%q), want running until its agent exits", id, running.Status, running.LastError)
			}
			st := waitWorkspaceStatus(t, store, id, fsm.Failed, 2*time.Minute)
			failedBy(t, checkFailed(t, s, store, st, "container exited with code 3"), fsm.ContainerExitedEv)
			if st.Generation != running.Generation {
				t.Errorf("%s failed at generation %d, it ran at %d", id, st.Generation, running.Generation)
			}
			recoverWorkspace(t, d, rec, id, fsm.Command{Type: fsm.Configure, Spec: &fsm.Spec{}}, fsm.Command{Type: fsm.Start})
		})
	})
	if t.Failed() {
		t.FailNow()
	}
	d.checkInventory(t, store)
	f := deleteAllAndCheck(t, d, rec, natsURL, dbURL, s.dataDir(), ids)
	report{Scenario: "docker-faults", Long: long(), Commands: len(rec.commands()), Workspaces: len(ids),
		Seconds: time.Since(begin).Seconds(), Faults: 4,
		FaultKind:     "container removed from outside; missing image; image exiting at once; image exiting while running",
		StreamRecords: f.Records, Events: f.Events, Outcomes: f.Outcomes, Lost: f.Lost, Duplicated: f.Duplicated}.log(t)
}

// TestDockerSocketDown runs serve with DOCKER_HOST on a proxy of the Docker
// socket and cuts the proxy (listener and every open connection) for a few
// seconds, right after a create and while stop, restart, start and create
// are sent. Every workspace they touch must end with a reason (failed, with
// its last error) or in the state asked for; a workspace nobody touched
// stays running at its generation; serve stays up and ready; after the
// proxy is back, a user command brings every workspace to running, and a
// new one is created as usual.
func TestDockerSocketDown(t *testing.T) {
	gate(t)
	begin := time.Now()
	outage := pick(5*time.Second, 20*time.Second)
	d := newDockerEnv(t)
	proxy := startDockerProxy(t, d.cli.DaemonHost())
	s, rec, natsURL, dbURL := dockerServe(t, d, 2*time.Minute, "DOCKER_HOST="+proxy.host(), "DOCKER_TLS_VERIFY=", "DOCKER_CERT_PATH=")
	store := rec.cl.Store()
	ws := func(name string) string { return name + "-" + d.suffix }
	stop, restart, start, create, inflight, steady, after := ws("stop"), ws("restart"), ws("start"), ws("create"), ws("inflight"), ws("steady"), ws("after")

	for _, id := range []string{stop, restart, start, steady} {
		rec.mustSend(t, fsm.Command{Type: fsm.Create, Workspace: id}, fsm.Accepted)
	}
	for _, id := range []string{stop, restart, start, steady} {
		if st := settleWorkspace(t, store, id, 2*time.Minute); st.Status != fsm.Running {
			t.Fatalf("%s: %s (%q), want running before the outage", id, st.Status, st.LastError)
		}
	}
	rec.mustSend(t, fsm.Command{Type: fsm.Stop, Workspace: start}, fsm.Accepted)
	if st := settleWorkspace(t, store, start, 2*time.Minute); st.Status != fsm.Stopped {
		t.Fatalf("%s: %s (%q), want stopped before the outage", start, st.Status, st.LastError)
	}
	steadyBefore := settleWorkspace(t, store, steady, time.Minute)

	// The fault: Docker goes while a create's provision is under way (its
	// container made, the start or the wait for health in progress), and
	// stop, restart, start and create are sent while it is away.
	rec.mustSend(t, fsm.Command{Type: fsm.Create, Workspace: inflight}, fsm.Accepted)
	poll(t, time.Minute, 10*time.Millisecond, "the container of "+inflight, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := d.cli.ContainerInspect(ctx, provisioner.ContainerName(inflight))
		return err == nil
	})
	proxy.cut()
	cutAt := time.Now()
	want := map[string]fsm.Status{inflight: fsm.Running}
	for _, c := range []fsm.Command{{Type: fsm.Stop, Workspace: stop}, {Type: fsm.Restart, Workspace: restart},
		{Type: fsm.Start, Workspace: start}, {Type: fsm.Create, Workspace: create}} {
		rec.mustSend(t, c, fsm.Accepted)
		want[c.Workspace] = fsm.Running
	}
	want[stop] = fsm.Stopped
	time.Sleep(outage - time.Since(cutAt)) // the fault's duration: Docker stays unreachable this long
	proxy.restore()
	t.Logf("Docker was unreachable for %v", time.Since(cutAt).Round(time.Millisecond))

	var failed, completed int
	for id, target := range want {
		st := settleWorkspace(t, store, id, 2*time.Minute)
		switch st.Status {
		case fsm.Failed:
			failed++
			checkFailed(t, s, store, st)
			if !strings.Contains(strings.ToLower(st.LastError), "docker") {
				t.Errorf("%s failed with %q, which does not say Docker was unreachable", id, st.LastError)
			}
		case target:
			completed++
			t.Logf("%s: completed (%s) after all", id, st.Status)
		default:
			t.Errorf("%s ended %s (%q), want failed with a reason or %s", id, st.Status, st.LastError, target)
		}
	}
	if st := settleWorkspace(t, store, steady, time.Minute); st.Status != fsm.Running || st.Seq != steadyBefore.Seq {
		t.Errorf("%s, untouched, is %s at event %d (%q), was running at event %d", steady, st.Status, st.Seq, st.LastError, steadyBefore.Seq)
	}
	select {
	case <-s.done:
		t.Fatalf("serve exited during the outage: %v", s.err)
	default:
	}
	s.waitReady(30 * time.Second)

	// Recovery: one user command each.
	for id := range want {
		switch st := settleWorkspace(t, store, id, time.Minute); st.Status {
		case fsm.Failed, fsm.Stopped:
			recoverWorkspace(t, d, rec, id, fsm.Command{Type: fsm.Start})
		case fsm.Running:
			recoverWorkspace(t, d, rec, id, fsm.Command{Type: fsm.Restart})
		}
	}
	rec.mustSend(t, fsm.Command{Type: fsm.Create, Workspace: after}, fsm.Accepted)
	if st := settleWorkspace(t, store, after, 2*time.Minute); st.Status != fsm.Running {
		t.Errorf("%s, created after the outage: %s (%q)", after, st.Status, st.LastError)
	}
	ids := []string{stop, restart, start, create, inflight, steady, after}
	d.checkRunning(t, store, ids)
	if t.Failed() {
		t.FailNow()
	}
	d.checkInventory(t, store)
	f := deleteAllAndCheck(t, d, rec, natsURL, dbURL, s.dataDir(), ids)
	t.Logf("%d workspaces failed with a reason, %d completed after all", failed, completed)
	report{Scenario: "docker-socket-down", Long: long(), Commands: len(rec.commands()), Workspaces: len(ids),
		Seconds: time.Since(begin).Seconds(), Faults: proxy.cuts,
		FaultKind:     fmt.Sprintf("Docker socket unreachable for %v (proxy cut)", outage),
		StreamRecords: f.Records, Events: f.Events, Outcomes: f.Outcomes, Lost: f.Lost, Duplicated: f.Duplicated}.log(t)
}
