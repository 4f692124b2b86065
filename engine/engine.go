package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/internal/pull"
	"github.com/turnstile-dev/turnstile/internal/retry"
)

// DefaultReplyPrefixes are where the engine replies by default: NATS
// clients' default inboxes.
func DefaultReplyPrefixes() []string { return []string{"_INBOX."} }

// MaxAtomicCommands is the most commands one batch can hold
// (events.MaxCommitWrites: the server's limit on an atomic batch).
const MaxAtomicCommands = events.MaxCommitWrites

// DefaultCommitters is one: the events stream applies atomic batches one
// at a time in a single goroutine of the server (staging each in a store
// of its own, created, flushed and removed), so batches in flight together
// are applied one after another anyway and only make each other smaller.
// Measured in docs/benchmarks.md: one committer gave 35-60% more commands
// per second than four under both durabilities.
const DefaultCommitters = 1

// DefaultAtomicBatchFrom is right for a server that fsyncs every write
// (sync_always, serve's default): there a plain publish costs one fsync per
// message, so two or more events go cheaper in one atomic batch (its
// staging store costs about two fsyncs), and a lone command goes plain.
// Measured in docs/benchmarks.md.
const DefaultAtomicBatchFrom = 2

// Config wires an engine. Store and JetStream are required; the rest has
// defaults.
type Config struct {
	// Store is the event log the engine loads workspaces from and commits
	// to.
	Store *events.Store
	// JetStream is the context of the command and system report streams:
	// the engine's consumers, acks and direct replies.
	JetStream jetstream.JetStream
	// Durable is the consumer name; engines with the same name share the work.
	Durable string
	// Parallel bounds how many workspaces are handled at once.
	Parallel int
	// MaxAckPending is shared out over the partition consumers: each takes
	// its share, but at least 4 × MaxPendingPerWorkspace and 64.
	MaxAckPending int
	// Name tells this engine apart in the members bucket and in turnstile
	// status; default its member id.
	Name string
	// Provisioner identifies the container engine the serve of this
	// engine provisions on (serve: "docker <daemon ID>", or "sim <state
	// file>@<host>" for the simulator), and ProvisionerHint describes it
	// for people (the daemon's name and address). The engine only announces both in its
	// member entry and never compares them: it is the serves that must
	// share one container engine (each reconciles every workspace against
	// its own), which serve checks at start and turnstile status reports.
	Provisioner, ProvisionerHint string
	// MemberTTL is how long an engine that stopped announcing itself stays
	// a member (its partitions move after it); default DefaultMemberTTL.
	MemberTTL time.Duration
	// PinnedTTL is how long the server keeps a partition pinned to an
	// engine that sends no pull; default DefaultPinnedTTL. Set at consumer
	// creation.
	PinnedTTL time.Duration
	// MaxPendingPerWorkspace bounds the commands waiting for one
	// workspace; a user command beyond it is refused busy at once, without
	// being decided (see busy.go). 0 means DefaultMaxPendingPerWorkspace;
	// negative, no bound.
	MaxPendingPerWorkspace int
	// MaxBatch bounds the commands written in one atomic batch; 1 turns
	// batching off. At most MaxAtomicCommands: larger values are lowered.
	MaxBatch int
	// AtomicBatchFrom: a batch with at least this many events is written
	// as one JetStream atomic batch, a smaller one as plain publishes
	// (events.CommitOptions). 0 means DefaultAtomicBatchFrom; negative,
	// never. Use -1 when the server does not fsync every write (its
	// default durability): an atomic batch then costs more than the plain
	// publishes it replaces at any size.
	AtomicBatchFrom int
	// Committers is how many batches may be in flight at once; default
	// DefaultCommitters.
	Committers int
	// CommitStores, if set, are stores on connections of their own that
	// the committers write through (round robin). The server reads each
	// connection in one goroutine, so writes that share a connection with
	// the consumer's pulls and acks queue behind them.
	CommitStores []*events.Store
	// AckWait is how long the server waits before redelivering a command.
	AckWait time.Duration
	// ReplyPrefixes are the subject prefixes the engine sends direct
	// replies (events.ReplyHeader) under; default DefaultReplyPrefixes. A reply
	// subject elsewhere gets no reply (the outcome is still stored): the
	// header is the sender's to choose, and the engine must not publish
	// into another workspace's events or another part's inbox for them.
	ReplyPrefixes []string
	// ActorKey is the installation's actor key: a user command whose
	// actor is the API's ("api:<name>", fsm.IsAPIActor) is decided only
	// when it carries the API's proof under this key
	// (events.ActorProofHeader), made within the duplicate window of its
	// message; otherwise it is refused invalid. Without a key, every such
	// command is refused: there is no API whose commands could be proven.
	ActorKey []byte
	// AdmitSpec, if set, judges the spec a create or configure that
	// fsm.Decide accepts would record, against what this installation may
	// run (serve: its provisioner policy's images, profiles and maximum
	// limits). An error refuses the command invalid with the error's text,
	// nothing stored: the caller hears at once, rather than the attempt
	// failing at provisioning. Pure and quick: it runs for every such
	// decision.
	AdmitSpec func(fsm.Spec) error
	Logger    *slog.Logger
	Metrics   *Metrics
	// Now and NewID are injected for deterministic tests.
	Now   func() time.Time
	NewID func() string
	// readAttempt, if set, replaces readAttempt (recover.go): tests
	// shorten it (export_test.go).
	readAttempt time.Duration
	// noRetake: a pull that ended by itself is not taken afresh (tests
	// that delete a consumer and need it to stay deleted).
	noRetake bool
}

func (c *Config) setDefaults() {
	if c.Durable == "" {
		c.Durable = events.DefaultEngineDurable
	}
	if c.Parallel <= 0 {
		c.Parallel = 512
	}
	if c.MaxAckPending <= 0 {
		c.MaxAckPending = 8192
	}
	if c.MaxPendingPerWorkspace == 0 {
		c.MaxPendingPerWorkspace = DefaultMaxPendingPerWorkspace
	}
	if c.MaxBatch <= 0 {
		c.MaxBatch = 256
	}
	c.MaxBatch = min(c.MaxBatch, MaxAtomicCommands)
	if c.Committers <= 0 {
		c.Committers = DefaultCommitters
	}
	if c.AtomicBatchFrom == 0 {
		c.AtomicBatchFrom = DefaultAtomicBatchFrom
	}
	if c.AckWait <= 0 {
		c.AckWait = 30 * time.Second
	}
	if len(c.ReplyPrefixes) == 0 {
		c.ReplyPrefixes = DefaultReplyPrefixes()
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.NewID == nil {
		c.NewID = func() string { return uuid.NewString() }
	}
	if c.MemberTTL <= 0 {
		c.MemberTTL = DefaultMemberTTL
	}
	if c.PinnedTTL <= 0 {
		c.PinnedTTL = DefaultPinnedTTL
	}
}

// Engine consumes commands. New starts nothing; Open starts; Close stops.
type Engine struct {
	cfg   Config
	store *events.Store
	js    jetstream.JetStream
	names events.Names
	log   *slog.Logger

	cancel context.CancelFunc
	// closing ends when Close begins: a catch-up (gap.go) stops retrying.
	closing     context.Context
	stopClosing context.CancelFunc
	wg          sync.WaitGroup
	queue       *queue
	commit      *committer

	// parts is P; perConsumer, each partition consumer's MaxAckPending.
	parts, perConsumer int
	// consumers are the partition consumers, by durable/stream.
	consumers map[string]jetstream.Consumer
	own       *owner
	stopOwn   context.CancelFunc
	owning    sync.WaitGroup // heartbeat and balance
	heads     *headCache

	// refusing bounds the busy refusals written at once (busy.go).
	refusing chan struct{}

	// opened is when Open began: a command stored before it may have been
	// handled by an earlier engine (see handle's again).
	opened time.Time

	// window is the shorter of the command and event streams' duplicate
	// windows as last read (ns; 0: unknown), and windowRead when (Unix ns):
	// unseen.go.
	window, windowRead atomic.Int64
	// warnedReply: a refused reply subject has been logged at warn level
	// (later ones at debug).
	warnedReply atomic.Bool
}

// source is a stream the engine consumes for one partition: user commands
// on <prefix>.cmd.<k>.*, or system reports on <prefix>.sys.<k>.*, which
// only serve's own parts can publish. Each has a durable consumer of its
// own; all feed one queue, so a workspace's commands and reports are
// handled one at a time.
type source struct {
	stream, filter, durable string
}

func (e *Engine) sources(k int) []source {
	d := events.EngineConsumer(e.cfg.Durable, k)
	return []source{
		{stream: e.names.CommandStream(), filter: e.names.CommandsIn(k), durable: d},
		{stream: e.names.SystemStream(), filter: e.names.SystemsIn(k), durable: d},
	}
}

// consumerConfig is partition k's durable consumer of src, as Open makes
// it (and remakeConsumer makes it again).
func (e *Engine) consumerConfig(k int, src source) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:        src.durable,
		Description:    fmt.Sprintf("Turnstile command engine, partition %d", k),
		FilterSubject:  src.filter,
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        e.cfg.AckWait,
		MaxAckPending:  e.perConsumer,
		MaxDeliver:     -1,
		DeliverPolicy:  jetstream.DeliverAllPolicy,
		PriorityPolicy: jetstream.PriorityPolicyPinned,
		PriorityGroups: []string{PriorityGroup},
		PinnedTTL:      e.cfg.PinnedTTL,
	}
}

// New returns an engine for cfg.
func New(cfg Config) (*Engine, error) {
	if cfg.Store == nil {
		return nil, errors.New("engine: Config.Store is required")
	}
	if cfg.JetStream == nil {
		return nil, errors.New("engine: Config.JetStream is required")
	}
	cfg.setDefaults()
	return &Engine{cfg: cfg, store: cfg.Store, js: cfg.JetStream, names: cfg.Store.Names(), log: cfg.Logger}, nil
}

// Open creates or binds the durable consumers (one per partition and
// stream), joins the engines sharing the durable name and starts handling
// the partitions assigned to this engine (owner.go).
func (e *Engine) Open(ctx context.Context) error {
	e.opened = e.cfg.Now()
	cmdStream, err := e.js.Stream(ctx, e.names.CommandStream())
	if err != nil {
		return fmt.Errorf("engine: %w", err)
	}
	if e.parts, err = events.PartitionsOf(cmdStream.CachedInfo().Config, e.names); err != nil {
		return fmt.Errorf("engine: %w", err)
	}
	// A partition's share of MaxAckPending, but room for a flooded
	// workspace's cap several times over: a flood must be refused busy
	// (busy.go) rather than fill its partition's consumer and stall the
	// partition's other workspaces at the server.
	perConsumer := max((e.cfg.MaxAckPending+e.parts-1)/e.parts, 4*e.cfg.MaxPendingPerWorkspace, 64)
	e.perConsumer = perConsumer
	e.consumers = make(map[string]jetstream.Consumer, 2*e.parts)
	var mu sync.Mutex
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for k := range e.parts {
		for _, src := range e.sources(k) {
			g.Go(func() error {
				cons, err := e.js.CreateOrUpdateConsumer(gctx, src.stream, e.consumerConfig(k, src))
				if err != nil {
					return fmt.Errorf("engine: consumer %s on %s: %w", src.durable, src.stream, err)
				}
				mu.Lock()
				e.consumers[src.durable+"/"+src.stream] = cons
				mu.Unlock()
				return nil
			})
		}
	}
	if err := g.Wait(); err != nil {
		return err
	}
	// The queue must hold what the consumers can deliver: another engine
	// may have set them to more than this one would (its settings win at
	// its start).
	capacity := 0
	for _, c := range e.consumers {
		capacity += max(c.CachedInfo().Config.MaxAckPending, perConsumer)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	e.closing, e.stopClosing = context.WithCancel(context.Background())
	// Room for the recovered besides: the consumers may hold more unacked
	// commands than this engine's MaxAckPending, if an earlier one had more.
	e.queue = newQueue(2*capacity, e.cfg.MaxPendingPerWorkspace)
	e.refusing = make(chan struct{}, refusalsInFlight)
	e.heads = newHeadCache(65536)
	e.commit = newCommitter(e.cfg.MaxBatch, max(e.cfg.AtomicBatchFrom, 0), e.log, e.cfg.Metrics)
	for i := range e.cfg.Committers {
		store := e.store
		if n := len(e.cfg.CommitStores); n > 0 {
			store = e.cfg.CommitStores[i%n]
		}
		e.wg.Go(func() { e.commit.run(runCtx, store) })
	}
	for range e.cfg.Parallel {
		e.wg.Go(func() { e.work(runCtx) })
	}
	own, err := e.openMembers(ctx, max(cmdStream.CachedInfo().Config.Replicas, 1))
	if err == nil {
		// Set before anything is queued: the workers read it (takenAt).
		e.own = own
		// The first assignment before Open returns: a lone engine pulls
		// every partition from the start.
		err = own.rebalance(ctx, runCtx, true)
	}
	if err != nil {
		e.stopOwned(own)
		return err
	}
	ownCtx, stopOwn := context.WithCancel(runCtx)
	e.stopOwn = stopOwn
	e.owning.Go(func() { own.heartbeat(ownCtx) })
	e.owning.Go(func() { own.balance(ownCtx, runCtx) })
	e.log.Info("engine started", "durable", e.cfg.Durable, "engine", e.cfg.Name, "partitions", e.parts,
		"pulls", own.partitions(), "parallel", e.cfg.Parallel, "max_batch", e.cfg.MaxBatch,
		"committers", e.cfg.Committers, "max_pending_per_workspace", e.cfg.MaxPendingPerWorkspace)
	return nil
}

// pullBatch is how many commands one pull of a partition asks for.
func (e *Engine) pullBatch() int { return min(1024, e.perConsumer) }

// stopOwned ends a failed Open (own may be nil) as Close would: what was
// queued handed back, the pins dropped.
func (e *Engine) stopOwned(own *owner) {
	e.stopClosing() // first: a retake (owner.retaken) ends with it, and wg waits for that
	var owned map[int]*partition
	if own != nil {
		owned = own.leave(context.Background())
		for _, p := range owned {
			p.cancel()
			for _, it := range p.pulls {
				it.Stop()
			}
			p.pulled.Wait()
		}
	}
	left := e.queue.close()
	e.cancel()
	e.wg.Wait()
	for _, m := range left {
		_ = m.Nak()
	}
	if own != nil {
		own.unpinAll(owned)
	}
	e.cancel, e.own = nil, nil
}

// Partitions returns the partitions this engine pulls now.
func (e *Engine) Partitions() []int {
	if e.own == nil {
		return nil
	}
	return e.own.partitions()
}

// Close stops taking commands, lets the ones being handled finish or hands
// them back (unacked, so they are redelivered), leaves the members and
// unpins its partitions so the other engines take them at once, and waits.
func (e *Engine) Close() error {
	if e.cancel == nil {
		return nil
	}
	e.stopOwn()
	e.owning.Wait()
	e.stopClosing()
	ctx, cancelCtx := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancelCtx()
	owned := e.own.leave(ctx)
	for _, p := range owned {
		p.cancel() // sweeps end; the pull loops drain their iterators below
	}
	// Drain rather than Stop: commands already pulled into the iterator's
	// buffer reach the queue (and are handed back below) instead of being
	// dropped to come back only after the ack wait, behind newer ones.
	for _, p := range owned {
		for _, it := range p.pulls {
			it.Drain()
		}
	}
	pulled := make(chan struct{})
	go func() {
		for _, p := range owned {
			p.pulled.Wait()
		}
		close(pulled)
	}()
	select {
	case <-pulled:
	case <-time.After(5 * time.Second):
		for _, p := range owned { // a drain that does not finish: give up on the buffer
			for _, it := range p.pulls {
				it.Stop()
			}
		}
		<-pulled
	}
	left := e.queue.close()
	e.cancel()
	e.wg.Wait() // commands being handled are handed back by their workers
	// Then the queued ones, oldest first: the server redelivers nak'd
	// commands before new ones, so a workspace's order survives a restart.
	for _, m := range left {
		_ = m.Nak()
	}
	e.own.unpinAll(owned)
	e.cancel = nil
	return nil
}

// pull reads one source's commands in stream order and queues them per
// workspace, after the commands lost on the way if there is a gap (gap.go).
// If its iterator ends by itself (pull.ErrEnded: the consumer deleted, an
// operator's `nats consumer rm` or a reset, and perhaps made again by
// another serve's Open), the partition is taken afresh (owner.retake):
// nothing else would ever pull it again, while the heartbeat went on
// announcing it as this engine's.
func (e *Engine) pull(ctx context.Context, it jetstream.MessagesContext, w *gapWatch) {
	err := pull.LoopNotify(ctx, it, "engine", e.log, retryDelay, func(m jetstream.Msg) {
		e.catchUpBefore(ctx, w, m)
		if ws := e.names.WorkspaceOf(m.Subject()); !e.queue.offer(ws, m) {
			e.overflow(ctx, ws, m)
		}
	}, func(error) {
		w.failed = true
		e.sweepAfterFailure(ctx, w)
	})
	if err == nil || ctx.Err() != nil {
		return // let go of, or Close
	}
	k, _ := e.names.PartitionOf(w.src.filter)
	if errors.Is(err, jetstream.ErrConnectionClosed) {
		// Closed on purpose (the connections reconnect forever): nothing
		// can be pulled on it again. The heartbeat fails too, so the other
		// engines take the partition after the member TTL.
		e.log.Warn("engine: the NATS connection is closed; the partition is no longer pulled", "partition", k,
			"stream", w.src.stream, "err", err)
		return
	}
	if e.cfg.noRetake {
		e.log.Warn("engine: the pull of a partition ended by itself", "partition", k, "stream", w.src.stream, "err", err)
		return
	}
	e.log.Warn("engine: the pull of a partition ended by itself (its consumer deleted or refused the pull); taking the partition afresh",
		"partition", k, "stream", w.src.stream, "consumer", w.src.durable, "err", err)
	e.own.retake(k)
}

// remakeConsumers makes partition k's consumers pullable again, until it
// works or ctx ends (remakeConsumer).
func (e *Engine) remakeConsumers(ctx context.Context, k int) error {
	for _, src := range e.sources(k) {
		for attempt := 0; ; attempt++ {
			actx, cancel := context.WithTimeout(ctx, e.readLimit())
			err := e.remakeConsumer(actx, k, src)
			cancel()
			if err == nil {
				break
			}
			if ctx.Err() == nil {
				e.log.Warn("engine: could not make a partition's consumer again; retrying", "partition", k,
					"stream", src.stream, "consumer", src.durable, "attempt", attempt, "err", err)
			}
			if err := retry.Sleep(ctx, retryDelay(attempt)); err != nil {
				return fmt.Errorf("engine: consumer %s on %s: %w", src.durable, src.stream, err)
			}
		}
	}
	return nil
}

// remakeConsumer makes src's consumer of partition k as Open makes it if it
// is missing (it then delivers from the stream's first command), or if it
// was made again without the pinned priority group (the pull is refused:
// 400 Bad Request). One made again otherwise (another serve's Open) is
// left as it is.
func (e *Engine) remakeConsumer(ctx context.Context, k int, src source) error {
	cons, err := e.js.Consumer(ctx, src.stream, src.durable)
	switch {
	case errors.Is(err, jetstream.ErrConsumerNotFound):
		cfg := e.consumerConfig(k, src)
		if _, err := e.js.CreateConsumer(ctx, src.stream, cfg); err != nil {
			return err // ErrConsumerExists: made meanwhile; the next attempt looks at it
		}
		// The server ends the pulls (409) before it removes the deleted
		// consumer's directory, and a consumer made in between loses its
		// own: every later write of its configuration fails (500, "no such
		// file"), and its state is not kept (nats-server 2.15). Write it
		// once more to see; lost so, it is deleted and made again.
		if _, err = e.js.UpdateConsumer(ctx, src.stream, cfg); err != nil {
			return errors.Join(fmt.Errorf("engine: the consumer made again cannot be written: %w", err),
				e.js.DeleteConsumer(ctx, src.stream, src.durable))
		}
	case err != nil:
	case cons.CachedInfo().Config.PriorityPolicy != jetstream.PriorityPolicyPinned ||
		!slices.Contains(cons.CachedInfo().Config.PriorityGroups, PriorityGroup):
		_, err = e.js.UpdateConsumer(ctx, src.stream, e.consumerConfig(k, src))
	}
	return err
}

// work handles one workspace's next command at a time.
func (e *Engine) work(ctx context.Context) {
	for {
		ws, j, ok := e.queue.next()
		if !ok {
			return
		}
		// Under its partition's handling context, which letGo ends once it
		// stops waiting: a command still in hand then goes to the next
		// owner instead of being decided here beside it.
		hctx := ctx
		k, inPart := e.names.PartitionOf(j.msg.Subject())
		if inPart && e.own != nil {
			if c, ok := e.own.handlingContext(k); ok {
				hctx = c
			}
		}
		e.handle(hctx, j.msg, j.recovered || j.again)
		if hctx.Err() != nil && !j.recovered {
			if ctx.Err() == nil {
				e.log.Warn("engine: a command of a partition let go is handed back to its next owner", "partition", k, "workspace", ws)
			}
			_ = j.msg.Nak() // handed back unless handle settled it (then a no-op)
		}
		e.queue.done(ws)
	}
}
