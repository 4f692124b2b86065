package testenv

import (
	"context"
	"crypto/rand"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/turnstile-dev/turnstile/client"
	"github.com/turnstile-dev/turnstile/engine"
	"github.com/turnstile-dev/turnstile/events"
)

// CoreOptions tune StartCore.
type CoreOptions struct {
	NATS    NATSOptions
	Engines int // 0 means 1
	Engine  engine.Config
	// Partitions is P of the streams; 0 means events.DefaultPartitions.
	Partitions int
	// Cluster, if set, is used instead of an embedded server of its own
	// (NATS is then ignored, and Core.NATS is nil), with every stream at
	// Replicas (0 means 1).
	Cluster  *Cluster
	Replicas int
	// DuplicateWindow of the streams; 0 means EnsureStreams' default.
	DuplicateWindow time.Duration
	// InProcess connects serve's own parts (the engines, SystemClient,
	// ConnectOwn) to the embedded server in-process
	// (NATS.ConnectInProcess), as serve does; user clients, Connect and
	// Core.JS stay on loopback TCP, as a user's client connects. Not with
	// a Cluster, and not in tests that restart the server (an in-process
	// connection cannot follow it). Benchmarks set it: TCP costs the
	// engine about a third of its rate at 8 commands in flight
	// (docs/benchmarks.md, "Benchmarks connect serve's parts as serve").
	InProcess bool
}

// Core is a running NATS with Turnstile's streams and engines.
type Core struct {
	NATS    *NATS // nil on a Cluster
	NC      *nats.Conn
	JS      jetstream.JetStream
	Store   *events.Store
	Engines []*engine.Engine
	// ActorKey is the installation's actor key, made at start: the
	// engines' (unless CoreOptions.Engine has one) and APIClient's.
	ActorKey []byte
	opts     CoreOptions
	// connect opens a connection to the core's server or cluster;
	// ownConnect one for serve's own parts (CoreOptions.InProcess).
	connect, ownConnect func(testing.TB) (*nats.Conn, jetstream.JetStream)
}

// StartCore starts embedded NATS (or uses o.Cluster), creates the streams
// and opens the engines.
func StartCore(tb testing.TB, o CoreOptions) *Core {
	tb.Helper()
	c := &Core{opts: o, ActorKey: o.Engine.ActorKey}
	if c.ActorKey == nil {
		c.ActorKey = make([]byte, events.ActorKeySize)
		_, _ = rand.Read(c.ActorKey)
	}
	if o.Cluster != nil {
		c.connect = o.Cluster.Connect
	} else {
		c.NATS = StartNATS(tb, o.NATS)
		c.connect = c.NATS.Connect
	}
	c.ownConnect = c.connect
	if o.InProcess {
		if c.NATS == nil {
			tb.Fatal("testenv: InProcess needs the embedded server, not a Cluster")
		}
		c.ownConnect = c.NATS.ConnectInProcess
	}
	c.NC, c.JS = c.connect(tb)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := events.EnsureStreams(ctx, c.JS, events.NewNames(""), events.StreamOptions{Replicas: o.Replicas, Partitions: o.Partitions, DuplicateWindow: o.DuplicateWindow}); err != nil {
		tb.Fatal(err)
	}
	store, err := events.OpenStore(ctx, c.JS, events.NewNames(""), events.Codec{})
	if err != nil {
		tb.Fatal(err)
	}
	c.Store = store
	if o.Engines == 0 {
		o.Engines = 1
	}
	for range o.Engines {
		c.StartEngine(tb)
	}
	return c
}

// StartEngine opens one more engine on its own connection, closed at cleanup.
func (c *Core) StartEngine(tb testing.TB) *engine.Engine {
	tb.Helper()
	_, js := c.ownConnect(tb)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	store, err := events.OpenStore(ctx, js, events.NewNames(""), events.Codec{})
	if err != nil {
		tb.Fatal(err)
	}
	cfg := c.opts.Engine
	cfg.Store, cfg.JetStream, cfg.ActorKey = store, js, c.ActorKey
	if cfg.Committers == 0 {
		cfg.Committers = engine.DefaultCommitters
	}
	cfg.CommitStores = nil
	for range cfg.Committers {
		_, cjs := c.ownConnect(tb)
		cs, err := events.OpenStore(ctx, cjs, events.NewNames(""), events.Codec{})
		if err != nil {
			tb.Fatal(err)
		}
		cfg.CommitStores = append(cfg.CommitStores, cs)
	}
	if cfg.Logger == nil {
		cfg.Logger = Logger(tb)
	}
	e, err := engine.New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	if err := e.Open(ctx); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = e.Close() })
	c.Engines = append(c.Engines, e)
	return e
}

// Connect opens one more connection to the core's server (or cluster),
// closed at the end of the test.
func (c *Core) Connect(tb testing.TB) (*nats.Conn, jetstream.JetStream) {
	tb.Helper()
	return c.connect(tb)
}

// ConnectOwn opens one more connection as serve's own parts have one:
// in-process with CoreOptions.InProcess, else as Connect. Closed at the
// end of the test.
func (c *Core) ConnectOwn(tb testing.TB) (*nats.Conn, jetstream.JetStream) {
	tb.Helper()
	return c.ownConnect(tb)
}

// Client returns a user client on its own connection.
func (c *Core) Client(tb testing.TB, actor string) *client.Client {
	tb.Helper()
	return c.newClient(tb, c.connect, client.Options{Actor: actor, PollInterval: 200 * time.Millisecond})
}

// APIClient returns a client as serve's HTTP API has one: it proves its
// commands' actors (client.Options.ActorKey), so the engines decide the
// API's actors ("api:<name>") it sends.
func (c *Core) APIClient(tb testing.TB) *client.Client {
	tb.Helper()
	return c.newClient(tb, c.ownConnect, client.Options{Actor: "api", PollInterval: 200 * time.Millisecond, ActorKey: c.ActorKey})
}

// SystemClient returns a client on its own connection (ConnectOwn) that
// may also send system reports (client.Options.System), as serve's
// provisioning side does.
func (c *Core) SystemClient(tb testing.TB, actor string) *client.Client {
	tb.Helper()
	return c.newClient(tb, c.ownConnect, client.Options{Actor: actor, PollInterval: 200 * time.Millisecond, System: true})
}

func (c *Core) newClient(tb testing.TB, connect func(testing.TB) (*nats.Conn, jetstream.JetStream), o client.Options) *client.Client {
	tb.Helper()
	nc, _ := connect(tb)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cl, err := client.New(ctx, nc, o)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = cl.Close() })
	return cl
}

// Logger logs warnings and errors to the test log (everything with
// TURNSTILE_TEST_DEBUG=1).
func Logger(tb testing.TB) *slog.Logger {
	level := slog.LevelWarn
	if os.Getenv("TURNSTILE_TEST_DEBUG") != "" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(tbWriter{tb}, &slog.HandlerOptions{Level: level}))
}

type tbWriter struct{ tb testing.TB }

func (w tbWriter) Write(p []byte) (int, error) {
	w.tb.Log(string(p))
	return len(p), nil
}

// Eventually polls cond until it holds or the deadline passes.
func Eventually(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		<-tick.C
	}
}
