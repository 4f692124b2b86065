package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/internal/pull"
	"github.com/turnstile-dev/turnstile/internal/retry"
	"github.com/turnstile-dev/turnstile/internal/textcut"
	"github.com/turnstile-dev/turnstile/provisioner"
)

// Config wires a Worker. Store, Provisioner and Publisher are required.
type Config struct {
	Store       *events.Store
	Provisioner provisioner.Provisioner
	Publisher   Publisher
	// Durable names the consumer; one per installation.
	Durable string
	// AckWait is how long the server waits for an event's ack before
	// redelivering it; long actions send in-progress heartbeats.
	AckWait time.Duration
	// Retries is how often a transient failure (the engine unreachable) is
	// retried before it is reported as a failure.
	Retries int
	// MaxConcurrentActions bounds how many actions (provision, stop,
	// delete; all workspaces together) run on the provisioner at once;
	// further actions wait for a slot, in no particular order, and a newer
	// generation still cancels a waiting one. An engine given hundreds of
	// creates at once slows every one of them down past its timeouts.
	// 0 means DefaultMaxConcurrentActions.
	MaxConcurrentActions int

	// Secrets resolves the secret://NAME env references of a spec just
	// before it is provisioned, so that only references are ever in
	// events. Nil: a spec with references fails to provision.
	Secrets Resolver

	Logger  *slog.Logger
	Metrics *Metrics
}

// Resolver turns a spec's secret references into values.
type Resolver interface {
	// Resolve returns spec with each secret://NAME env value replaced by the
	// secret's value, or an error that names the secret but holds no value.
	Resolve(ctx context.Context, spec fsm.Spec) (fsm.Spec, error)
}

// DefaultMaxConcurrentActions is Config.MaxConcurrentActions when unset:
// what one Docker Engine on a small host handles without its creates
// taking tens of seconds.
const DefaultMaxConcurrentActions = 16

// Worker carries out provision, stop and delete actions. New starts
// nothing; Open starts; Close stops.
type Worker struct {
	cfg    Config
	log    *slog.Logger
	names  events.Names
	mu     sync.Mutex
	actors map[string]*actor
	slots  chan struct{} // one token per running action; see MaxConcurrentActions
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// job is one event to act on.
type job struct {
	msg jetstream.Msg
	env events.Envelope
}

// actor serializes one workspace's actions. Guarded by Worker.mu.
type actor struct {
	pending []job
	running *attempt // the action in progress, nil when idle
	done    attempt  // the last action carried to its end
}

type attempt struct {
	status     fsm.Status
	generation uint64
	seq        uint64 // the workspace event sequence of the state acted on
	cancel     context.CancelCauseFunc
}

// errSuperseded is the cause an attempt is cancelled with when a newer
// event takes its point away; any other cause means the worker stops.
var errSuperseded = errors.New("superseded by a newer event")

func (a attempt) is(st fsm.Workspace) bool {
	return a.status == st.Status && a.generation == st.Generation
}

// supersededBy reports whether e ends the point of the running attempt: a
// newer generation, or its own generation failed (a deadline). Neither an
// older event (redelivered after its ack wait ran out while an action took
// long) nor the attempt's own success, which arrives while the action is
// still returning from its report, cancels it.
func (a attempt) supersededBy(e events.Envelope) bool {
	if e.Seq <= a.seq || a.is(e.State) {
		return false
	}
	return e.State.Generation != a.generation || e.State.Status == fsm.Failed
}

// New returns a worker for cfg.
func New(cfg Config) (*Worker, error) {
	if cfg.Store == nil || cfg.Provisioner == nil || cfg.Publisher == nil {
		return nil, errors.New("worker: Store, Provisioner and Publisher are required")
	}
	if cfg.Durable == "" {
		cfg.Durable = "turnstile-worker"
	}
	if cfg.AckWait <= 0 {
		cfg.AckWait = 30 * time.Second
	}
	if cfg.Retries <= 0 {
		cfg.Retries = 3
	}
	if cfg.MaxConcurrentActions < 0 {
		return nil, fmt.Errorf("worker: MaxConcurrentActions is %d; want 0 (the default, %d) or more", cfg.MaxConcurrentActions, DefaultMaxConcurrentActions)
	}
	if cfg.MaxConcurrentActions == 0 {
		cfg.MaxConcurrentActions = DefaultMaxConcurrentActions
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Worker{cfg: cfg, log: cfg.Logger, names: cfg.Store.Names(), actors: map[string]*actor{},
		slots: make(chan struct{}, cfg.MaxConcurrentActions)}, nil
}

// Open binds the durable consumer on the event subjects and starts acting.
func (w *Worker) Open(ctx context.Context) error {
	it, err := w.consume(ctx)
	if err != nil {
		return err
	}
	runCtx, cancel := context.WithCancel(context.Background())
	w.cancel = cancel
	w.wg.Go(func() { w.pull(runCtx, it) })
	return nil
}

// consume creates (or binds) the durable consumer and returns its messages.
func (w *Worker) consume(ctx context.Context) (jetstream.MessagesContext, error) {
	it, err := w.cfg.Store.ConsumeEvents(ctx, events.DurableConfig{Durable: w.cfg.Durable, Description: "Turnstile provisioner worker",
		AckWait: w.cfg.AckWait, MaxAckPending: 20000, Pull: 512,
		// One worker at a time acts on the events of an installation,
		// whatever the number of serves: a workspace's actions keep their
		// order, and a stopped or killed serve's share moves to another
		// within PinnedTTL (6 s).
		PinnedGroup: "worker", PinnedTTL: 6 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("worker: %w", err)
	}
	return it, nil
}

// Close stops taking events and abandons running actions; their events are
// not acknowledged, so the next worker redoes them.
func (w *Worker) Close() error {
	if w.cancel == nil {
		return nil
	}
	w.cancel() // stops the iterator too (pull)
	w.wg.Wait()
	w.cancel = nil
	return nil
}

// pull acts on the events of it, and of the iterators after it, until ctx
// ends. An iterator that ends by itself (its consumer deleted: an
// operator's `nats consumer rm`, a reset) is replaced: the consumer is
// bound again, or made again as Open makes it, after a growing wait, so
// provisioning goes on (on a single serve nothing else would bind it). A
// consumer made again delivers every event again from the first; act finds
// the old ones superseded by the workspaces' heads.
func (w *Worker) pull(ctx context.Context, it jetstream.MessagesContext) {
	for failures := 0; ; {
		got := false
		stop := context.AfterFunc(ctx, it.Stop) // Next takes no context
		err := pull.Loop(ctx, it, "worker", w.log, backoff, func(m jetstream.Msg) {
			got = true
			w.handle(ctx, m)
		})
		stop()
		it.Stop()
		if err == nil || ctx.Err() != nil {
			return
		}
		if errors.Is(err, jetstream.ErrConnectionClosed) {
			w.log.Warn("worker: the NATS connection is closed; no more events are acted on", "err", err)
			return
		}
		if got {
			failures = 0
		}
		w.log.Warn("worker: the pull of events ended by itself (its consumer deleted or refused the pull); binding the consumer again",
			"consumer", w.cfg.Durable, "err", err)
		for it = nil; it == nil; {
			if retry.Sleep(ctx, backoff(failures)) != nil {
				return
			}
			failures++
			if it, err = w.consume(ctx); err != nil {
				if ctx.Err() != nil {
					return
				}
				w.log.Warn("worker: bind the event consumer again", "consumer", w.cfg.Durable, "attempt", failures, "err", err)
			}
		}
	}
}

// handle decodes an event and hands it to its workspace's actor.
func (w *Worker) handle(ctx context.Context, m jetstream.Msg) {
	env, err := w.cfg.Store.DecodeEvent(m.Subject(), m.Data())
	if err != nil {
		// Not ours to fix; the projector's dead letters and the audit
		// report it. Never block the log on it, and never act on an
		// envelope its subject does not name.
		u := &events.Unreadable{Subject: m.Subject(), Data: m.Data(), Err: err}
		if md, err := m.Metadata(); err == nil {
			u.StreamSeq, u.Time = md.Sequence.Stream, md.Timestamp
		}
		w.cfg.Metrics.workerQuarantine().Add(w.log, u)
		_ = m.Term()
		return
	}
	w.dispatch(ctx, job{msg: m, env: env})
}

// dispatch queues j behind its workspace's other events and cancels the
// running action if j supersedes it.
func (w *Worker) dispatch(ctx context.Context, j job) {
	ws := j.env.Workspace
	w.mu.Lock()
	a, ok := w.actors[ws]
	if !ok {
		a = &actor{}
		w.actors[ws] = a
	}
	a.pending = append(a.pending, j)
	if a.running != nil && a.running.supersededBy(j.env) {
		w.log.Info("worker: cancelling superseded action", "workspace", ws,
			"action_generation", a.running.generation, "new_state", j.env.State.Status, "new_generation", j.env.State.Generation)
		a.running.cancel(errSuperseded)
	}
	w.mu.Unlock()
	if !ok {
		w.wg.Go(func() { w.run(ctx, ws, a) })
	}
}

// run works through one workspace's events until none are left. Only the
// newest pending event matters: each carries the whole state.
func (w *Worker) run(ctx context.Context, ws string, a *actor) {
	for {
		w.mu.Lock()
		if len(a.pending) == 0 || ctx.Err() != nil {
			delete(w.actors, ws)
			w.mu.Unlock()
			return
		}
		jobs := a.pending
		a.pending = nil
		// The newest event by sequence, not by arrival: a redelivered
		// older event can arrive after newer ones.
		newest := 0
		for i, j := range jobs {
			if j.env.Seq >= jobs[newest].env.Seq {
				newest = i
			}
		}
		latest := jobs[newest]
		st := latest.env.State
		act := st.Status.InFlight() && !a.done.is(st)
		var actx context.Context
		if act {
			var cancel context.CancelCauseFunc
			actx, cancel = context.WithCancelCause(ctx)
			a.running = &attempt{status: st.Status, generation: st.Generation, seq: latest.env.Seq, cancel: cancel}
		}
		w.mu.Unlock()

		for i, j := range jobs {
			if i != newest {
				_ = j.msg.Ack() // superseded by latest
			}
		}
		if !act {
			_ = latest.msg.Ack()
			continue
		}
		finished := w.act(actx, latest)
		w.mu.Lock()
		a.running.cancel(nil)
		if finished {
			a.done = *a.running
		}
		a.running = nil
		w.mu.Unlock()
	}
}

// act carries out the action j's state asks for and reports it. actx ends
// when a newer event supersedes the attempt (cause errSuperseded) or the
// worker stops. It returns true when the action reached an end (reported,
// or found superseded), and acks j then; on shutdown it leaves j unacked
// for redelivery.
func (w *Worker) act(actx context.Context, j job) bool {
	st := j.env.State
	log := w.log.With("workspace", st.ID, "generation", st.Generation, "state", st.Status)

	// Beat until the action has returned, also while it waits for a slot
	// and while a cancelled action cleans up, so that its event is not
	// redelivered meanwhile.
	stopBeat := w.heartbeat(context.WithoutCancel(actx), j.msg)
	defer stopBeat()
	waited := time.Now()
	if !w.acquire(actx) {
		w.cfg.Metrics.action(kindOf(st.Status), "abandoned", time.Since(waited).Seconds())
		log.Debug("worker: action abandoned while waiting for a slot", "why", context.Cause(actx))
		return w.abandoned(actx, j)
	}
	defer w.release()

	// After a crash, when this worker lags, or after waiting for a slot,
	// the event may be old news.
	head, err := w.load(actx, st.ID)
	if err != nil {
		return w.abandoned(actx, j)
	}
	if head.State.Generation != st.Generation || head.State.Status != st.Status {
		log.Debug("worker: event superseded before acting", "now", head.State.Status, "now_generation", head.State.Generation)
		_ = j.msg.Ack()
		return true
	}

	start := time.Now()
	kind, cmd, err := w.do(actx, st)
	result := "succeeded"
	switch {
	case actx.Err() != nil:
		w.cfg.Metrics.action(kind, "abandoned", time.Since(start).Seconds())
		log.Info("worker: action abandoned", "action", kind, "why", context.Cause(actx))
		return w.abandoned(actx, j)
	case provisioner.CodeOf(err) == provisioner.CodeSuperseded:
		w.cfg.Metrics.action(kind, "superseded", time.Since(start).Seconds())
		log.Info("worker: action superseded by a newer container", "action", kind, "reason", provisioner.ReasonOf(err))
		_ = j.msg.Ack()
		return true
	case err != nil:
		result = "failed"
		log.Warn("worker: action failed", "action", kind, "reason", cmd.Reason)
	}
	w.cfg.Metrics.action(kind, result, time.Since(start).Seconds())
	if err := report(actx, w.cfg.Store, w.cfg.Publisher, w.log, w.cfg.Metrics, cmd); err != nil {
		if actx.Err() != nil {
			return w.abandoned(actx, j)
		}
		log.Error("worker: report refused", "command", cmd.ID, "err", err)
	}
	_ = j.msg.Ack()
	return true
}

// acquire takes a slot for an action (see MaxConcurrentActions), waiting
// while all are taken. It gives up, returning false, when actx ends: a
// newer generation cancels a waiting action as it does a running one.
func (w *Worker) acquire(actx context.Context) bool {
	select {
	case w.slots <- struct{}{}:
		w.cfg.Metrics.running(1)
		return true
	default:
	}
	w.cfg.Metrics.waiting(1)
	defer w.cfg.Metrics.waiting(-1)
	select {
	case w.slots <- struct{}{}:
		w.cfg.Metrics.running(1)
		return true
	case <-actx.Done():
		return false
	}
}

// release gives back the slot acquire took.
func (w *Worker) release() {
	w.cfg.Metrics.running(-1)
	<-w.slots
}

// kindOf names the action a state asks for, as metrics and logs do.
func kindOf(s fsm.Status) string {
	switch s {
	case fsm.Provisioning:
		return "provision"
	case fsm.Stopping:
		return "stop"
	case fsm.Deleting:
		return "delete"
	}
	return "none"
}

// abandoned acks an action that a newer event superseded (that event's
// action takes over), and leaves it unacked when the worker stops.
func (w *Worker) abandoned(actx context.Context, j job) bool {
	if !errors.Is(context.Cause(actx), errSuperseded) {
		return false
	}
	_ = j.msg.Ack()
	return false
}

// do runs one action, retrying transient failures, and returns the report.
func (w *Worker) do(ctx context.Context, st fsm.Workspace) (string, fsm.Command, error) {
	p := w.cfg.Provisioner
	kind := kindOf(st.Status)
	var ok, fail fsm.CommandType
	var run func() (string, error)
	// redact keeps the secret values of the last attempt out of its
	// reason and the log: the container's output may hold them.
	var redact provisioner.Redactor
	switch st.Status {
	case fsm.Provisioning:
		ok, fail = fsm.ProvisionSucceeded, fsm.ProvisionFailed
		run = func() (string, error) {
			spec, err := w.resolve(ctx, st)
			if err != nil {
				return "", err
			}
			redact = provisioner.NewRedactor(st.Spec.SecretRefs(), spec)
			res, err := p.Provision(ctx, provisioner.Request{Workspace: st.ID, Generation: st.Generation, Spec: spec, Redact: redact})
			return res.ContainerID, err
		}
	case fsm.Stopping:
		ok, fail = fsm.StopSucceeded, fsm.StopFailed
		run = func() (string, error) { return "", p.Stop(ctx, st.ID, st.Generation) }
	case fsm.Deleting:
		ok, fail = fsm.DeleteSucceeded, fsm.DeleteFailed
		run = func() (string, error) { return "", p.Delete(ctx, st.ID, st.Generation) }
	default:
		return kind, fsm.Command{}, fmt.Errorf("worker: nothing to do in %s", st.Status)
	}
	var err error
	var container string
	for attempt := 0; ; attempt++ {
		container, err = run()
		code := provisioner.CodeOf(err)
		if err == nil || code.Permanent() || code == provisioner.CodeCanceled || ctx.Err() != nil ||
			code != provisioner.CodeEngine || attempt+1 >= w.cfg.Retries {
			break
		}
		w.log.Warn("worker: transient failure; retrying", "workspace", st.ID, "generation", st.Generation, "action", kind,
			"err", redact.Redact(err.Error()))
		if retry.Sleep(ctx, backoff(attempt+2)) != nil {
			break
		}
	}
	cmd := fsm.Command{ID: reportID(kind, st.ID, st.Generation), Workspace: st.ID, Generation: st.Generation, Actor: "worker"}
	if err != nil {
		cmd.Type, cmd.Reason = fail, truncate(redact.Redact(provisioner.ReasonOf(err)), fsm.MaxReasonLen)
		return kind, cmd, err
	}
	cmd.Type = ok
	if ok == fsm.ProvisionSucceeded {
		cmd.ContainerID = truncate(container, 128)
	}
	return kind, cmd, nil
}

// resolve returns st's spec with its secret references resolved, read
// afresh for each attempt so that a secret set again is used by the next
// one. A reference that cannot be resolved fails the attempt for good
// (CodeInvalid): repeating it cannot help until someone sets the secret.
func (w *Worker) resolve(ctx context.Context, st fsm.Workspace) (fsm.Spec, error) {
	if len(st.Spec.SecretRefs()) == 0 {
		return st.Spec, nil
	}
	fail := func(reason string) error {
		return &provisioner.Error{Op: "provision", Workspace: st.ID, Generation: st.Generation, Code: provisioner.CodeInvalid, Reason: reason}
	}
	if w.cfg.Secrets == nil {
		return fsm.Spec{}, fail("the spec refers to secrets (" + fsm.SecretScheme + "NAME) but this worker has no secret store")
	}
	spec, err := w.cfg.Secrets.Resolve(ctx, st.Spec)
	if err != nil {
		if ctx.Err() != nil {
			return fsm.Spec{}, provisioner.Canceled("provision", st.ID, st.Generation, ctx.Err())
		}
		return fsm.Spec{}, fail(err.Error())
	}
	return spec, nil
}

func (w *Worker) load(ctx context.Context, id string) (events.Head, error) {
	for attempt := 0; ; attempt++ {
		h, err := w.cfg.Store.Load(ctx, id)
		if err == nil || ctx.Err() != nil {
			return h, err
		}
		w.log.Warn("worker: load", "workspace", id, "err", err)
		if err := retry.Sleep(ctx, backoff(attempt)); err != nil {
			return h, err
		}
	}
}

// heartbeat tells the server an action is still in progress, so a long
// provision is not redelivered to another worker mid-way.
func (w *Worker) heartbeat(ctx context.Context, m jetstream.Msg) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(w.cfg.AckWait / 3)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				_ = m.InProgress()
			}
		}
	})
	return func() { cancel(); wg.Wait() }
}

// truncate cuts s to at most n bytes on a rune boundary, after making it
// valid UTF-8: JSON turns each stray byte into a three-byte U+FFFD, so a
// reason cut through a character at fsm.MaxReasonLen would arrive longer
// than that, and the engine would refuse the report.
func truncate(s string, n int) string {
	return textcut.Prefix(strings.ToValidUTF8(s, "\uFFFD"), n)
}
