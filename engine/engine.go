package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/internal/retry"
)

// ReplyHeader names the header in which a client asks for a copy of the
// outcome on a core NATS subject, besides the stored one.
const ReplyHeader = "Turnstile-Reply"

// MaxAtomicCommands is the most commands one atomic batch can hold: a
// command writes up to two messages (event and outcome), and nats-server
// refuses atomic batches of more than 1,000 messages by default. A refused
// batch would be rewritten one command at a time, far slower.
const MaxAtomicCommands = 500

// DefaultCommitters is one: the events stream applies atomic batches one
// at a time in a single goroutine of the server (staging each in a store
// of its own, created, flushed and removed), so batches in flight together
// are applied one after another anyway and only make each other smaller.
// Measured in docs/benchmarks.md: one committer gave 35-60% more commands
// per second than four under both durabilities.
const DefaultCommitters = 1

// Config wires an engine. Store is required; the rest has defaults.
type Config struct {
	Store *events.Store
	// Durable is the consumer name; engines with the same name share the work.
	Durable string
	// Parallel bounds how many workspaces are handled at once.
	Parallel int
	// MaxAckPending bounds commands taken but not yet finished.
	MaxAckPending int
	// MaxPendingPerWorkspace bounds the commands waiting for one
	// workspace; a user command beyond it is refused busy at once, without
	// being decided (see busy.go). 0 means DefaultMaxPendingPerWorkspace;
	// negative, no bound.
	MaxPendingPerWorkspace int
	// MaxBatch bounds the commands written in one atomic batch; 1 turns
	// batching off. At most MaxAtomicCommands: larger values are lowered.
	MaxBatch int
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
	Logger  *slog.Logger
	Metrics *Metrics
	// Now and NewID are injected for deterministic tests.
	Now   func() time.Time
	NewID func() string
}

func (c *Config) setDefaults() {
	if c.Durable == "" {
		c.Durable = "turnstile-engine"
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
	if c.AckWait <= 0 {
		c.AckWait = 30 * time.Second
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
}

// Engine consumes commands. New starts nothing; Open starts; Close stops.
type Engine struct {
	cfg   Config
	store *events.Store
	js    jetstream.JetStream
	names events.Names
	log   *slog.Logger

	cancel context.CancelFunc
	wg     sync.WaitGroup
	iter   jetstream.MessagesContext
	queue  *queue
	pulled chan struct{} // closed when pull has returned
	commit *committer
	heads  *headCache

	// refusing bounds the busy refusals written at once (busy.go).
	refusing chan struct{}
}

// New returns an engine for cfg.
func New(cfg Config) (*Engine, error) {
	if cfg.Store == nil {
		return nil, errors.New("engine: Config.Store is required")
	}
	cfg.setDefaults()
	return &Engine{cfg: cfg, store: cfg.Store, js: cfg.Store.JetStream(), names: cfg.Store.Names(), log: cfg.Logger}, nil
}

// Open creates or binds the durable consumer and starts handling commands.
func (e *Engine) Open(ctx context.Context) error {
	cons, err := e.js.CreateOrUpdateConsumer(ctx, e.names.CommandStream(), jetstream.ConsumerConfig{
		Durable:       e.cfg.Durable,
		Description:   "Turnstile command engine",
		FilterSubject: e.names.Commands(),
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       e.cfg.AckWait,
		MaxAckPending: e.cfg.MaxAckPending,
		MaxDeliver:    -1,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return fmt.Errorf("engine: consumer %s: %w", e.cfg.Durable, err)
	}
	// Before the first pull: commands an earlier engine took and did not
	// finish would come back only after the ack wait, and their workspaces'
	// later commands must not overtake them; they are queued first.
	recovered := e.unfinished(ctx, cons)
	it, err := cons.Messages(jetstream.PullMaxMessages(min(1024, e.cfg.MaxAckPending)))
	if err != nil {
		return fmt.Errorf("engine: pull: %w", err)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	e.cancel, e.iter = cancel, it
	// Room for the recovered besides: the consumer may hold more unacked
	// commands than this engine's MaxAckPending, if an earlier one had more.
	e.queue = newQueue(e.cfg.MaxAckPending+len(recovered), e.cfg.MaxPendingPerWorkspace)
	e.refusing = make(chan struct{}, refusalsInFlight)
	for _, m := range recovered {
		e.queue.push(e.names.WorkspaceOf(m.Subject()), m)
	}
	e.heads = newHeadCache(65536)
	e.commit = newCommitter(e.cfg.MaxBatch, e.log, e.cfg.Metrics)
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
	e.pulled = make(chan struct{})
	go func() {
		defer close(e.pulled)
		e.pull(runCtx)
	}()
	e.log.Info("engine started", "durable", e.cfg.Durable, "parallel", e.cfg.Parallel, "max_batch", e.cfg.MaxBatch,
		"committers", e.cfg.Committers, "max_pending_per_workspace", e.cfg.MaxPendingPerWorkspace)
	return nil
}

// Close stops taking commands, lets the ones being handled finish or hands
// them back (unacked, so they are redelivered), and waits.
func (e *Engine) Close() error {
	if e.cancel == nil {
		return nil
	}
	// Drain rather than Stop: commands already pulled into the iterator's
	// buffer reach the queue (and are handed back below) instead of being
	// dropped to come back only after the ack wait, behind newer ones.
	e.iter.Drain()
	select {
	case <-e.pulled:
	case <-time.After(5 * time.Second):
		e.iter.Stop() // a drain that does not finish: give up on the buffer
		<-e.pulled
	}
	left := e.queue.close()
	e.cancel()
	e.wg.Wait() // commands being handled are handed back by their workers
	// Then the queued ones, oldest first: the server redelivers nak'd
	// commands before new ones, so a workspace's order survives a restart.
	for _, m := range left {
		_ = m.Nak()
	}
	e.cancel = nil
	return nil
}

// pull reads commands in stream order and queues them per workspace.
func (e *Engine) pull(ctx context.Context) {
	failures := 0
	for {
		m, err := e.iter.Next()
		if err != nil {
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) || ctx.Err() != nil {
				return
			}
			// Missed heartbeats while NATS is away: the iterator recovers by
			// itself; do not spin meanwhile.
			e.log.Warn("engine: pull", "err", err)
			if retry.Sleep(ctx, retryDelay(failures)) != nil {
				return
			}
			failures++
			continue
		}
		failures = 0
		if ws := e.names.WorkspaceOf(m.Subject()); !e.queue.offer(ws, m) {
			e.overflow(ctx, ws, m)
		}
	}
}

// work handles one workspace's next command at a time.
func (e *Engine) work(ctx context.Context) {
	for {
		ws, m, ok := e.queue.next()
		if !ok {
			return
		}
		e.handle(ctx, m)
		if ctx.Err() != nil {
			_ = m.Nak() // handed back unless handle settled it (then a no-op)
		}
		e.queue.done(ws)
	}
}
