package worker_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/volume"
	dockerclient "github.com/docker/docker/client"

	"github.com/turnstile-dev/turnstile/audit"
	"github.com/turnstile-dev/turnstile/client"
	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/internal/testenv"
	"github.com/turnstile-dev/turnstile/provisioner"
	"github.com/turnstile-dev/turnstile/provisioner/docker"
	"github.com/turnstile-dev/turnstile/provisioner/sim"
	"github.com/turnstile-dev/turnstile/provisioner/worker"
)

// rig is a core plus the provisioning side on a provisioner.
type rig struct {
	core *testenv.Core
	cl   *client.Client
	prov provisioner.Provisioner
	w    *worker.Worker
	sup  *worker.Supervisor
	wat  *worker.Watcher
	// ackWait is what startWorker gives each worker.
	ackWait time.Duration
	// maxActions and metrics are what startWorker gives each worker.
	maxActions int
	metrics    *worker.Metrics
	secrets    worker.Resolver
}

type rigOptions struct {
	deadlines map[fsm.Status]time.Duration
	noWatcher bool
	// ackWait is the worker's AckWait; 0 means 3s.
	ackWait time.Duration
	// maxActions is the worker's MaxConcurrentActions; 0 means its default.
	maxActions int
	// metrics, if not nil, are the worker's.
	metrics *worker.Metrics
	// secrets, if not nil, resolves the worker's secret references.
	secrets worker.Resolver
}

func newRig(tb testing.TB, prov provisioner.Provisioner, o rigOptions) *rig {
	tb.Helper()
	r := &rig{core: testenv.StartCore(tb, testenv.CoreOptions{}), prov: prov, ackWait: o.ackWait,
		maxActions: o.maxActions, metrics: o.metrics, secrets: o.secrets}
	if r.ackWait == 0 {
		r.ackWait = 3 * time.Second
	}
	r.cl = r.core.Client(tb, "test")
	r.w = r.startWorker(tb)
	pub := r.core.SystemClient(tb, "supervisor")
	sup, err := worker.NewSupervisor(worker.SupervisorConfig{Store: r.core.Store, Provisioner: prov, Publisher: pub,
		Deadlines: o.deadlines, SweepEvery: 20 * time.Millisecond, ReconcileEvery: time.Hour, Logger: testenv.Logger(tb),
		Metrics: o.metrics})
	if err != nil {
		tb.Fatal(err)
	}
	if err := sup.Open(context.Background()); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = sup.Close() })
	r.sup = sup
	if !o.noWatcher {
		wat, err := worker.NewWatcher(worker.WatcherConfig{Store: r.core.Store, Provisioner: prov, Publisher: pub, Logger: testenv.Logger(tb)})
		if err != nil {
			tb.Fatal(err)
		}
		if err := wat.Open(context.Background()); err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { _ = wat.Close() })
		r.wat = wat
	}
	return r
}

func (r *rig) startWorker(tb testing.TB) *worker.Worker {
	tb.Helper()
	w, err := worker.New(worker.Config{Store: r.core.Store, Provisioner: r.prov, Publisher: r.core.SystemClient(tb, "worker"),
		Logger: testenv.Logger(tb), AckWait: r.ackWait, MaxConcurrentActions: r.maxActions, Metrics: r.metrics, Secrets: r.secrets})
	if err != nil {
		tb.Fatal(err)
	}
	if err := w.Open(context.Background()); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = w.Close() })
	return w
}

func (r *rig) send(tb testing.TB, cmd fsm.Command) events.OutcomeRecord {
	tb.Helper()
	o, err := r.trySend(cmd)
	if err != nil {
		tb.Fatal(err)
	}
	return o
}

// trySend is send for goroutines other than the test's: it returns the
// error instead of failing.
func (r *rig) trySend(cmd fsm.Command) (events.OutcomeRecord, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	o, err := r.cl.Send(ctx, cmd)
	if err != nil {
		return o, fmt.Errorf("%s %s: %w", cmd.Type, cmd.Workspace, err)
	}
	return o, nil
}

// wait blocks until id is in status want (at generation gen, if not 0).
func (r *rig) wait(tb testing.TB, id string, want fsm.Status, gen uint64, timeout time.Duration) fsm.Workspace {
	tb.Helper()
	var st fsm.Workspace
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		h, err := r.core.Store.Load(context.Background(), id)
		if err != nil {
			tb.Fatal(err)
		}
		st = h.State
		if st.Status == want && (gen == 0 || st.Generation == gen) {
			return st
		}
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %v waiting for %s to be %s (gen %d); it is %s at generation %d (last error %q)",
				timeout, id, want, gen, st.Status, st.Generation, st.LastError)
		}
		<-tick.C
	}
}

// history returns id's events, oldest first, after checking that they
// replay legally through the lifecycle.
func (r *rig) history(tb testing.TB, id string) []events.Envelope {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var h []events.Envelope
	if err := r.core.Store.History(ctx, id, func(e events.Envelope) error { h = append(h, e); return nil }); err != nil {
		tb.Fatalf("history of %s: %v", id, err)
	}
	if _, vs := audit.Workspace(id, h); len(vs) > 0 {
		tb.Errorf("history of %s is not legal: %v", id, vs)
	}
	return h
}

// auditAll replays the whole event stream, checks every workspace's history
// through the lifecycle (audit.Replayer) and returns the final states and
// the failure reasons each workspace ever had.
func (r *rig) auditAll(tb testing.TB) (map[string]fsm.Workspace, map[string][]string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	replayers := map[string]*audit.Replayer{}
	failures := map[string][]string{}
	err := r.core.Store.Replay(ctx, 1, 0, func(rec events.Record) error {
		if rec.Unreadable != nil { // the engine never writes one
			tb.Errorf("%v", rec.Unreadable)
		}
		if rec.Event == nil {
			return nil
		}
		e := *rec.Event
		rp := replayers[e.Workspace]
		if rp == nil {
			rp = audit.NewReplayer(e.Workspace)
			replayers[e.Workspace] = rp
		}
		rp.Step(e)
		if e.State.Status == fsm.Failed {
			failures[e.Workspace] = append(failures[e.Workspace], e.Payload.Reason)
		}
		return nil
	})
	if err != nil {
		tb.Fatalf("replay: %v", err)
	}
	states := map[string]fsm.Workspace{}
	for id, rp := range replayers {
		for _, v := range rp.Violations {
			tb.Errorf("audit: %s", v)
		}
		states[id] = rp.State
	}
	return states, failures
}

func newSim(tb testing.TB, minLat, maxLat time.Duration) *sim.Provisioner {
	tb.Helper()
	p, err := sim.New(sim.Config{Installation: "test", DefaultImage: "agent", MinLatency: minLat, MaxLatency: maxLat, Seed: 1, Logger: testenv.Logger(tb)})
	if err != nil {
		tb.Fatal(err)
	}
	return p
}

func instances(tb testing.TB, p provisioner.Provisioner) []provisioner.Instance {
	tb.Helper()
	list, err := p.List(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	return list
}

func volumes(tb testing.TB, p provisioner.Provisioner) map[string]bool {
	tb.Helper()
	vs, err := p.ListVolumes(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	out := map[string]bool{}
	for _, v := range vs {
		out[v.Workspace] = true
	}
	return out
}

func randomID(prefix string) string { return fmt.Sprintf("%s-%08x", prefix, rand.Uint32()) }

// dockerEnv is one installation on the real Docker engine.
type dockerEnv struct {
	cli          *dockerclient.Client
	image        string
	installation string
	prov         *docker.Provisioner
}

// newDocker connects to Docker (skipping loudly when it is unreachable,
// failing under CI=true), builds the agent image if needed and returns a
// provisioner for a fresh installation. Everything labelled with that
// installation is removed when the test ends, after everything registered
// later (the worker, supervisor and watcher) has stopped.
func newDocker(tb testing.TB) *dockerEnv {
	tb.Helper()
	cli := testenv.Docker(tb)
	d := &dockerEnv{cli: cli, image: testenv.AgentImage(tb, cli)}
	d.installation = randomID("wt")
	d.prov = d.provisioner(tb, d.installation)
	return d
}

// provisioner returns a provisioner of installation on d's engine and
// removes what is labelled with installation when the test ends.
func (d *dockerEnv) provisioner(tb testing.TB, installation string) *docker.Provisioner {
	tb.Helper()
	p, err := docker.New(docker.Config{Client: d.cli, Installation: installation, DefaultImage: d.image, Logger: testenv.Logger(tb)})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { removeInstallation(tb, d.cli, installation) })
	return p
}

func installationFilter(installation string) filters.Args {
	return filters.NewArgs(filters.Arg("label", provisioner.LabelInstallation+"="+installation))
}

// leftovers lists the containers and volumes labelled with installation.
func (d *dockerEnv) leftovers(tb testing.TB, installation string) (cs []container.Summary, vs []*volume.Volume) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cs, err := d.cli.ContainerList(ctx, container.ListOptions{All: true, Filters: installationFilter(installation)})
	if err != nil {
		tb.Fatal(err)
	}
	vl, err := d.cli.VolumeList(ctx, volume.ListOptions{Filters: installationFilter(installation)})
	if err != nil {
		tb.Fatal(err)
	}
	return cs, vl.Volumes
}

// removeInstallation removes every container and volume labelled with
// installation, whatever the test left behind.
func removeInstallation(tb testing.TB, cli *dockerclient.Client, installation string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cs, err := cli.ContainerList(ctx, container.ListOptions{All: true, Filters: installationFilter(installation)})
	if err != nil {
		tb.Errorf("cleanup: list containers: %v", err)
		return
	}
	for _, c := range cs {
		if err := cli.ContainerRemove(ctx, c.ID, container.RemoveOptions{Force: true}); err != nil && !cerrdefs.IsNotFound(err) {
			tb.Errorf("cleanup: remove container %s: %v", c.ID, err)
		}
	}
	vs, err := cli.VolumeList(ctx, volume.ListOptions{Filters: installationFilter(installation)})
	if err != nil {
		tb.Errorf("cleanup: list volumes: %v", err)
		return
	}
	for _, v := range vs.Volumes {
		if err := cli.VolumeRemove(ctx, v.Name, true); err != nil && !cerrdefs.IsNotFound(err) {
			tb.Errorf("cleanup: remove volume %s: %v", v.Name, err)
		}
	}
}

// inspect returns the container named ws-<ws>; ok is false when there is
// none.
func (d *dockerEnv) inspect(tb testing.TB, ws string) (container.InspectResponse, bool) {
	tb.Helper()
	c, err := d.cli.ContainerInspect(context.Background(), provisioner.ContainerName(ws))
	if cerrdefs.IsNotFound(err) {
		return c, false
	}
	if err != nil {
		tb.Fatal(err)
	}
	return c, true
}

func (d *dockerEnv) volumeExists(tb testing.TB, ws string) bool {
	tb.Helper()
	_, err := d.cli.VolumeInspect(context.Background(), provisioner.VolumeName(ws))
	if err != nil && !cerrdefs.IsNotFound(err) {
		tb.Fatal(err)
	}
	return err == nil
}

// workspaceContainers lists every container (running or not) labelled with
// d's installation and workspace ws.
func (d *dockerEnv) workspaceContainers(tb testing.TB, ws string) []container.Summary {
	tb.Helper()
	cs, err := d.cli.ContainerList(context.Background(), container.ListOptions{All: true, Filters: filters.NewArgs(
		filters.Arg("label", provisioner.LabelInstallation+"="+d.installation),
		filters.Arg("label", provisioner.LabelWorkspace+"="+ws),
	)})
	if err != nil {
		tb.Fatal(err)
	}
	return cs
}

// isNameConflict reports whether a failure reason comes from two attempts
// fighting over one container name (the seed system's bug).
func isNameConflict(reason string) bool {
	for _, s := range []string{"already in use", "Conflict", "is taken by", "kept changing hands"} {
		if strings.Contains(reason, s) {
			return true
		}
	}
	return false
}
