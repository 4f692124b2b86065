package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/internal/retry"
	"github.com/turnstile-dev/turnstile/provisioner"
)

// DefaultDeadlines are how long each in-flight state may last.
func DefaultDeadlines() map[fsm.Status]time.Duration {
	return map[fsm.Status]time.Duration{
		fsm.Provisioning: 10 * time.Minute,
		fsm.Stopping:     5 * time.Minute,
		fsm.Deleting:     5 * time.Minute,
	}
}

// SupervisorConfig wires a Supervisor. Store, Provisioner and Publisher are
// required.
type SupervisorConfig struct {
	Store       *events.Store
	Provisioner provisioner.Provisioner
	Publisher   Publisher
	// Deadlines per in-flight state; missing entries take DefaultDeadlines.
	Deadlines map[fsm.Status]time.Duration
	// SweepEvery is how often deadlines are checked; 0 means 1s.
	SweepEvery time.Duration
	// ReconcileEvery is how often the container inventory is compared with
	// the state; 0 means 1 minute. It also runs once at start.
	ReconcileEvery time.Duration
	Logger         *slog.Logger
	Metrics        *Metrics
	Now            func() time.Time
}

// Supervisor follows every workspace's state from the event log and acts on
// what nobody else will: deadlines and drift between state and containers.
type Supervisor struct {
	cfg    SupervisorConfig
	log    *slog.Logger
	mu     sync.Mutex
	states map[string]*tracked
	ready  chan struct{}
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// tracked is what the supervisor knows of one workspace.
type tracked struct {
	status     fsm.Status
	generation uint64
	since      time.Time // when the workspace entered (status, generation)
	reported   bool      // deadline_exceeded sent for this (status, generation)
}

// NewSupervisor returns a supervisor for cfg.
func NewSupervisor(cfg SupervisorConfig) (*Supervisor, error) {
	if cfg.Store == nil || cfg.Provisioner == nil || cfg.Publisher == nil {
		return nil, errors.New("supervisor: Store, Provisioner and Publisher are required")
	}
	d := DefaultDeadlines()
	for k, v := range cfg.Deadlines {
		d[k] = v
	}
	cfg.Deadlines = d
	if cfg.SweepEvery <= 0 {
		cfg.SweepEvery = time.Second
	}
	if cfg.ReconcileEvery <= 0 {
		cfg.ReconcileEvery = time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Supervisor{cfg: cfg, log: cfg.Logger, states: map[string]*tracked{}, ready: make(chan struct{})}, nil
}

// Open starts following the log from its beginning, sweeping and
// reconciling. Ready is closed once the log has been read up to where it
// stood at Open.
func (s *Supervisor) Open(ctx context.Context) error {
	last, err := s.cfg.Store.LastSeq(ctx)
	if err != nil {
		return fmt.Errorf("supervisor: %w", err)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.wg.Go(func() { s.follow(runCtx, last) })
	s.wg.Go(func() { s.loop(runCtx) })
	return nil
}

// Ready is closed when the supervisor has caught up with the log.
func (s *Supervisor) Ready() <-chan struct{} { return s.ready }

// Close stops the supervisor.
func (s *Supervisor) Close() error {
	if s.cancel != nil {
		s.cancel()
		s.wg.Wait()
		s.cancel = nil
	}
	return nil
}

// follow folds every event into the tracked states, resubscribing after
// failures from where it stopped.
func (s *Supervisor) follow(ctx context.Context, caughtUpAt uint64) {
	next := uint64(1)
	readyOnce := sync.OnceFunc(func() { close(s.ready) })
	if caughtUpAt == 0 {
		readyOnce()
	}
	for attempt := 0; ctx.Err() == nil; attempt++ {
		err := s.cfg.Store.Subscribe(ctx, next, func(r events.Record) error {
			next = r.StreamSeq + 1
			switch {
			case r.Event != nil:
				s.observe(r.Event)
			case r.Unreadable != nil:
				// Passed, not retried: a message no reader can use must
				// not stop the deadlines of every workspace.
				s.cfg.Metrics.supervisorQuarantine().Add(s.log, r.Unreadable)
			}
			if r.StreamSeq >= caughtUpAt {
				readyOnce()
			}
			attempt = 0
			return nil
		})
		if ctx.Err() != nil {
			return
		}
		s.log.Warn("supervisor: following the log; resubscribing", "from", next, "err", err)
		if retry.Sleep(ctx, backoff(attempt)) != nil {
			return
		}
	}
}

func (s *Supervisor) observe(e *events.Envelope) {
	st := e.State
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.states[st.ID]
	if t != nil && t.status == st.Status && t.generation == st.Generation {
		return // e.g. configure during provisioning: the clock keeps running
	}
	if st.Status == fsm.Deleted {
		// Nothing to supervise; the reconciler still treats unknown
		// workspaces' containers as orphans.
		delete(s.states, st.ID)
		return
	}
	s.states[st.ID] = &tracked{status: st.Status, generation: st.Generation, since: e.Time}
}

func (s *Supervisor) loop(ctx context.Context) {
	select {
	case <-s.ready:
	case <-ctx.Done():
		return
	}
	s.Reconcile(ctx)
	sweep := time.NewTicker(s.cfg.SweepEvery)
	defer sweep.Stop()
	reconcile := time.NewTicker(s.cfg.ReconcileEvery)
	defer reconcile.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-sweep.C:
			s.Sweep(ctx)
		case <-reconcile.C:
			s.Reconcile(ctx)
		}
	}
}

// Sweep reports deadline_exceeded for every workspace that has been in an
// in-flight state longer than its deadline.
func (s *Supervisor) Sweep(ctx context.Context) {
	now := s.cfg.Now()
	var due []fsm.Command
	s.mu.Lock()
	for id, t := range s.states {
		d, ok := s.cfg.Deadlines[t.status]
		if !ok || !t.status.InFlight() || t.reported || now.Sub(t.since) <= d {
			continue
		}
		t.reported = true
		due = append(due, fsm.Command{
			ID: reportID("deadline", id, t.generation), Type: fsm.DeadlineExceeded, Workspace: id,
			Generation: t.generation, Actor: "supervisor",
			Reason: fmt.Sprintf("%s deadline of %v exceeded: %s since %s", t.status, d, t.status, t.since.UTC().Format(time.RFC3339)),
		})
	}
	s.mu.Unlock()
	for _, cmd := range due {
		s.log.Warn("supervisor: deadline exceeded", "workspace", cmd.Workspace, "generation", cmd.Generation, "reason", cmd.Reason)
		s.cfg.Metrics.report("deadline")
		if err := report(ctx, s.cfg.Store, s.cfg.Publisher, s.log, s.cfg.Metrics, cmd); err != nil && ctx.Err() == nil {
			s.log.Error("supervisor: deadline report", "command", cmd.ID, "err", err)
		}
	}
}

// Reconcile compares the containers and volumes this installation owns
// with the state: containers and volumes of deleted or unknown workspaces
// are removed, running containers of stopped or failed workspaces are
// stopped, and running workspaces without a running container are reported
// as exited.
func (s *Supervisor) Reconcile(ctx context.Context) {
	// The state is read before the inventory: a workspace that was already
	// running then had its container up before the listing.
	before := s.snapshot()
	list, err := s.cfg.Provisioner.List(ctx)
	if err != nil {
		s.log.Warn("reconciler: cannot list containers", "err", err)
		return
	}
	seen := map[string]bool{}
	for _, inst := range list {
		seen[inst.Workspace] = true
		s.reconcileContainer(ctx, inst, before[inst.Workspace])
	}
	for id, t := range before {
		if t.status == fsm.Running && !seen[id] && s.unchanged(id, t) {
			s.exited(ctx, id, t.generation, nil, fmt.Sprintf("container %s is gone", provisioner.ContainerName(id)))
		}
	}
	s.reconcileVolumes(ctx, before, seen)
}

// reconcileVolumes removes volumes left behind by workspaces that are
// deleted or never existed, once the log confirms it. Volumes of workspaces
// that still have a container were dealt with above (deleting an orphan
// container takes its volume along); those of live workspaces are data and
// stay, even without a container (a failed workspace whose container was
// removed from outside keeps its volume for the next start).
func (s *Supervisor) reconcileVolumes(ctx context.Context, before map[string]tracked, seen map[string]bool) {
	vols, err := s.cfg.Provisioner.ListVolumes(ctx)
	if err != nil {
		s.log.Warn("reconciler: cannot list volumes", "err", err)
		return
	}
	for _, v := range vols {
		if seen[v.Workspace] || before[v.Workspace].status != fsm.None {
			continue
		}
		log := s.log.With("workspace", v.Workspace, "volume", v.Name)
		h, err := s.cfg.Store.Load(ctx, v.Workspace)
		if err != nil {
			log.Warn("reconciler: cannot confirm the workspace's state; volume left for now", "err", err)
			continue
		}
		if h.State.Status != fsm.None && h.State.Status != fsm.Deleted {
			continue // created meanwhile
		}
		why := "workspace never existed"
		if h.State.Status == fsm.Deleted {
			why = fmt.Sprintf("workspace was deleted at generation %d", h.State.Generation)
		}
		log.Info("reconciler: removing orphan volume", "why", why)
		s.cfg.Metrics.report("orphan_volume_removed")
		// RemoveVolume never touches a container and refuses a volume in
		// use: should the id be created again this very moment, its new
		// container keeps the volume (and if the volume goes just before
		// that container is made, the engine makes a fresh, labelled one).
		if err := s.cfg.Provisioner.RemoveVolume(ctx, v.Workspace); err != nil {
			log.Warn("reconciler: remove orphan volume", "err", err)
		}
	}
}

func (s *Supervisor) reconcileContainer(ctx context.Context, inst provisioner.Instance, t tracked) {
	log := s.log.With("workspace", inst.Workspace, "container_generation", inst.Generation, "container", inst.ContainerID)
	switch {
	case t.status == fsm.None:
		// Unknown or deleted: confirm with the log before removing anything.
		h, err := s.cfg.Store.Load(ctx, inst.Workspace)
		if err != nil || (h.State.Status != fsm.None && h.State.Status != fsm.Deleted) {
			return
		}
		gen := max(inst.Generation, h.State.Generation)
		log.Info("reconciler: removing orphan container", "why", fmt.Sprintf("workspace is %s", h.State.Status))
		s.cfg.Metrics.report("orphan_removed")
		if err := s.cfg.Provisioner.Delete(ctx, inst.Workspace, gen); err != nil {
			log.Warn("reconciler: remove orphan", "err", err)
		}
	case (t.status == fsm.Stopped || t.status == fsm.Failed) && inst.Running && inst.Generation <= t.generation && s.unchanged(inst.Workspace, t):
		// A container newer than the state we hold means our view lags
		// (a start we have not read yet): never stop it.
		log.Info("reconciler: stopping container", "why", fmt.Sprintf("workspace is %s at generation %d", t.status, t.generation))
		s.cfg.Metrics.report("stray_stopped")
		if err := s.cfg.Provisioner.Stop(ctx, inst.Workspace, t.generation); err != nil {
			log.Warn("reconciler: stop", "err", err)
		}
	case t.status == fsm.Running && inst.Generation == t.generation && !inst.Running && s.unchanged(inst.Workspace, t):
		code := inst.ExitCode
		s.exited(ctx, inst.Workspace, t.generation, &code, fmt.Sprintf("container %s is %s", provisioner.ContainerName(inst.Workspace), inst.State))
	}
}

func (s *Supervisor) exited(ctx context.Context, id string, gen uint64, code *int, why string) {
	s.log.Warn("reconciler: running workspace has no running container", "workspace", id, "generation", gen, "why", why)
	s.cfg.Metrics.report("exit_found")
	cmd := fsm.Command{ID: reportID("exitfound", id, gen), Type: fsm.ContainerExited, Workspace: id, Generation: gen,
		ExitCode: code, Reason: why, Actor: "reconciler"}
	if err := report(ctx, s.cfg.Store, s.cfg.Publisher, s.log, s.cfg.Metrics, cmd); err != nil && ctx.Err() == nil {
		s.log.Error("reconciler: report", "command", cmd.ID, "err", err)
	}
}

func (s *Supervisor) snapshot() map[string]tracked {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]tracked, len(s.states))
	for id, t := range s.states {
		out[id] = *t
	}
	return out
}

// unchanged reports whether id is still in the state t recorded.
func (s *Supervisor) unchanged(id string, t tracked) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.states[id]
	return cur != nil && cur.status == t.status && cur.generation == t.generation
}

// State returns what the supervisor knows of a workspace (for tests and
// diagnostics).
func (s *Supervisor) State(id string) (fsm.Status, uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if t := s.states[id]; t != nil {
		return t.status, t.generation
	}
	return fsm.None, 0
}
