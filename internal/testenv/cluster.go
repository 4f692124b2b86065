package testenv

import (
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ClusterOptions tune StartNATSCluster.
type ClusterOptions struct {
	// Nodes in the cluster; 0 means 3.
	Nodes int
	// Token, if set, is required of every client (an external cluster's
	// own auth; serve takes it as --nats-token).
	Token string
	// SyncAlways fsyncs before every ack on every node.
	SyncAlways bool
}

// Cluster is a NATS cluster of in-process nats-servers with JetStream,
// routed over loopback, each node with its own store dir and fixed ports so
// that a node shut down can be started again as itself.
type Cluster struct {
	tb   testing.TB
	name string
	opts ClusterOptions

	mu    sync.Mutex
	nodes []*ClusterNode
}

// ClusterNode is one server of a Cluster.
type ClusterNode struct {
	Name     string
	StoreDir string
	port     int
	route    int
	srv      *server.Server // nil while down
}

// StartNATSCluster starts a cluster (3 nodes unless o says) on free
// loopback ports, waits for a JetStream meta leader, and shuts every node
// down when the test ends.
func StartNATSCluster(tb testing.TB, o ClusterOptions) *Cluster {
	tb.Helper()
	if o.Nodes == 0 {
		o.Nodes = 3
	}
	c := &Cluster{tb: tb, name: "turnstile-test", opts: o}
	for i := range o.Nodes {
		c.nodes = append(c.nodes, &ClusterNode{Name: fmt.Sprintf("n%d", i), StoreDir: filepath.Join(tb.TempDir(), "js"),
			port: FreePort(tb), route: FreePort(tb)})
	}
	tb.Cleanup(c.shutdownAll)
	// All at once: a node waits for its routes before JetStream elects.
	var wg sync.WaitGroup
	errs := make([]error, len(c.nodes))
	for i := range c.nodes {
		wg.Go(func() { errs[i] = c.start(i) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			tb.Fatal(err)
		}
	}
	c.WaitMetaLeader(tb, 30*time.Second)
	return c
}

// options are node i's server options; the same at every start.
func (c *Cluster) options(i int) *server.Options {
	n := c.nodes[i]
	var routes []*url.URL
	for j, m := range c.nodes {
		if j != i {
			routes = append(routes, &url.URL{Scheme: "nats", Host: fmt.Sprintf("127.0.0.1:%d", m.route)})
		}
	}
	return &server.Options{
		ServerName:    n.Name,
		Host:          "127.0.0.1",
		Port:          n.port,
		JetStream:     true,
		StoreDir:      n.StoreDir,
		SyncAlways:    c.opts.SyncAlways,
		NoSigs:        true,
		NoLog:         true,
		MaxPayload:    1 << 20,
		Authorization: c.opts.Token,
		Cluster: server.ClusterOpts{Name: c.name, Host: "127.0.0.1", Port: n.route,
			// Quick reconnects of routes to a restarted node.
			ConnectRetries: 120},
		Routes: routes,
	}
}

func (c *Cluster) start(i int) error {
	s, err := server.NewServer(c.options(i))
	if err != nil {
		return fmt.Errorf("nats-server %s: %w", c.nodes[i].Name, err)
	}
	s.Start()
	if !s.ReadyForConnections(30 * time.Second) {
		s.Shutdown()
		return fmt.Errorf("nats-server %s did not become ready in 30s", c.nodes[i].Name)
	}
	c.mu.Lock()
	c.nodes[i].srv = s
	c.mu.Unlock()
	return nil
}

// URLs is every node's client URL, comma-separated, as nats.Connect and
// --nats-url take them.
func (c *Cluster) URLs() string {
	var out []string
	for _, n := range c.nodes {
		out = append(out, fmt.Sprintf("nats://127.0.0.1:%d", n.port))
	}
	return strings.Join(out, ",")
}

// Nodes returns the cluster's nodes.
func (c *Cluster) Nodes() []*ClusterNode { return c.nodes }

// Server is node i's running server, nil while it is down.
func (c *Cluster) Server(i int) *server.Server {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[i].srv
}

// Kill shuts node i down at once (the in-process stand-in for kill -9:
// its clients and routes drop; its store stays as it is on disk).
func (c *Cluster) Kill(tb testing.TB, i int) {
	tb.Helper()
	c.mu.Lock()
	s := c.nodes[i].srv
	c.nodes[i].srv = nil
	c.mu.Unlock()
	if s == nil {
		tb.Fatalf("node %s is already down", c.nodes[i].Name)
	}
	s.Shutdown()
	s.WaitForShutdown()
}

// Restart starts node i again on its store dir and ports.
func (c *Cluster) Restart(tb testing.TB, i int) {
	tb.Helper()
	if c.Server(i) != nil {
		tb.Fatalf("node %s is running", c.nodes[i].Name)
	}
	if err := c.start(i); err != nil {
		tb.Fatal(err)
	}
}

// MetaLeader is the index of the node that is the JetStream meta leader,
// -1 if none is.
func (c *Cluster) MetaLeader() int {
	for i := range c.nodes {
		if s := c.Server(i); s != nil && s.JetStreamIsLeader() {
			return i
		}
	}
	return -1
}

// StreamLeader is the index of the node leading stream (of the global
// account, which token auth uses), -1 if none is.
func (c *Cluster) StreamLeader(stream string) int {
	for i := range c.nodes {
		if s := c.Server(i); s != nil && s.JetStreamIsStreamLeader(server.DEFAULT_GLOBAL_ACCOUNT, stream) {
			return i
		}
	}
	return -1
}

// WaitMetaLeader waits until a meta leader is elected and every running
// node is current with it, and returns the leader's index.
func (c *Cluster) WaitMetaLeader(tb testing.TB, timeout time.Duration) int {
	tb.Helper()
	leader := -1
	Eventually(tb, timeout, "a JetStream meta leader with every running node current", func() bool {
		if leader = c.MetaLeader(); leader < 0 {
			return false
		}
		for i := range c.nodes {
			if s := c.Server(i); s != nil && !s.JetStreamIsCurrent() {
				return false
			}
		}
		return true
	})
	return leader
}

// WaitStreamLeader waits until stream has a leader and returns its index.
func (c *Cluster) WaitStreamLeader(tb testing.TB, stream string, timeout time.Duration) int {
	tb.Helper()
	leader := -1
	Eventually(tb, timeout, "a leader of stream "+stream, func() bool {
		leader = c.StreamLeader(stream)
		return leader >= 0
	})
	return leader
}

// WaitStreamCurrent waits until every running node's replica of stream is
// current (caught up with its leader).
func (c *Cluster) WaitStreamCurrent(tb testing.TB, stream string, timeout time.Duration) {
	tb.Helper()
	Eventually(tb, timeout, "every replica of stream "+stream+" to be current", func() bool {
		if c.StreamLeader(stream) < 0 {
			return false
		}
		for i := range c.nodes {
			if s := c.Server(i); s != nil && !s.JetStreamIsStreamCurrent(server.DEFAULT_GLOBAL_ACCOUNT, stream) {
				return false
			}
		}
		return true
	})
}

// Connect opens a client connection to every node, closed at the end of
// the test.
func (c *Cluster) Connect(tb testing.TB) (*nats.Conn, jetstream.JetStream) {
	tb.Helper()
	opts := []nats.Option{nats.MaxReconnects(-1), nats.ReconnectWait(50 * time.Millisecond)}
	if c.opts.Token != "" {
		opts = append(opts, nats.Token(c.opts.Token))
	}
	nc, err := nats.Connect(c.URLs(), opts...)
	if err != nil {
		tb.Fatalf("connect to %s: %v", c.URLs(), err)
	}
	tb.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		tb.Fatalf("jetstream: %v", err)
	}
	return nc, js
}

func (c *Cluster) shutdownAll() {
	c.mu.Lock()
	nodes := append([]*ClusterNode(nil), c.nodes...)
	var running []*server.Server
	for _, n := range nodes {
		if n.srv != nil {
			running = append(running, n.srv)
			n.srv = nil
		}
	}
	c.mu.Unlock()
	for _, s := range running {
		s.Shutdown()
	}
	for _, s := range running {
		s.WaitForShutdown()
	}
}
