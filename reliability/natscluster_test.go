package reliability_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/turnstile-dev/turnstile/internal/testenv"
)

// natsCluster is a NATS cluster of nats-server processes (the binary
// natsServerBin builds from the module this one requires) with JetStream,
// routed over loopback, each node with its own configuration file, store
// and fixed ports, so that a node kill -9'd starts again as itself. Unlike
// testenv.Cluster (in-process, whose kill is a Shutdown that hands
// leadership over first), a kill here leaves the survivors to notice and
// elect. Its methods fail the test and must be called from its goroutine.
type natsCluster struct {
	t     *testing.T
	nodes []*natsNode
	js    jetstream.JetStream // the watcher's connection: stream info
	hc    *http.Client
}

// natsNode is one server of a natsCluster.
type natsNode struct {
	name     string
	httpPort int // monitoring: /jsz, /healthz
	*natsServer
}

// startNATSProcessCluster starts three nodes with token auth (natsToken),
// waits until every node reports JetStream healthy, and stops them when
// the test ends.
func startNATSProcessCluster(t *testing.T) *natsCluster {
	t.Helper()
	bin := natsServerBin(t)
	c := &natsCluster{t: t, hc: &http.Client{Timeout: 2 * time.Second}}
	routes := make([]int, 3)
	for i := range routes {
		routes[i] = testenv.FreePort(t)
	}
	var routeURLs []string
	for _, p := range routes {
		routeURLs = append(routeURLs, fmt.Sprintf("nats-route://127.0.0.1:%d", p))
	}
	for i := range 3 {
		n := &natsNode{name: fmt.Sprintf("n%d", i), httpPort: testenv.FreePort(t),
			natsServer: &natsServer{t: t, bin: bin, dir: t.TempDir(), port: testenv.FreePort(t), out: &syncBuffer{}}}
		conf := filepath.Join(n.dir, "nats.conf")
		// connect_retries: routes to a node that is down are tried again
		// for a while instead of given up at once.
		text := fmt.Sprintf(`server_name: %s
listen: 127.0.0.1:%d
http: 127.0.0.1:%d
max_payload: 1MB
authorization { token: %q }
jetstream { store_dir: %q }
cluster {
  name: turnstile-reliability
  listen: 127.0.0.1:%d
  connect_retries: 120
  routes: [ %s ]
}
`, n.name, n.port, n.httpPort, natsToken, filepath.Join(n.dir, "store"), routes[i], strings.Join(routeURLs, ", "))
		if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		n.args = []string{"-c", conf}
		c.nodes = append(c.nodes, n)
	}
	t.Cleanup(func() {
		for _, n := range c.nodes {
			if n.done == nil {
				continue // never started
			}
			n.stop()
			if t.Failed() {
				t.Logf("nats-server %s output (tail):\n%s", n.name, n.out)
			}
		}
	})
	for _, n := range c.nodes {
		n.start()
	}
	c.waitHealthy(time.Minute)
	var err error
	c.js, err = jetstream.New(connect(t, c.urls(), "reliability-cluster-watch"))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// urls is every node's client URL, comma-separated, as --nats-url takes them.
func (c *natsCluster) urls() string {
	var out []string
	for _, n := range c.nodes {
		out = append(out, n.url())
	}
	return strings.Join(out, ",")
}

// up reports whether node i's process runs.
func (c *natsCluster) up(i int) bool {
	select {
	case <-c.nodes[i].done:
		return false
	default:
		return true
	}
}

// monitor GETs path from node i's monitoring port, decoding JSON into v
// (nil: the status alone), and reports whether it answered 200.
func (c *natsCluster) monitor(i int, path string, v any) bool {
	resp, err := c.hc.Get(fmt.Sprintf("http://127.0.0.1:%d%s", c.nodes[i].httpPort, path))
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return false
	}
	return v == nil || json.NewDecoder(resp.Body).Decode(v) == nil
}

// index is the index of the node named name, -1 if none is.
func (c *natsCluster) index(name string) int {
	for i, n := range c.nodes {
		if n.name == name {
			return i
		}
	}
	return -1
}

// metaLeader is the index of the JetStream meta leader every running node
// names, -1 while they do not agree on a running one.
func (c *natsCluster) metaLeader() int {
	leader := ""
	for i := range c.nodes {
		if !c.up(i) {
			continue
		}
		var jsz struct {
			Meta struct {
				Leader string `json:"leader"`
			} `json:"meta_cluster"`
		}
		if !c.monitor(i, "/jsz", &jsz) || jsz.Meta.Leader == "" || (leader != "" && jsz.Meta.Leader != leader) {
			return -1
		}
		leader = jsz.Meta.Leader
	}
	if i := c.index(leader); i >= 0 && c.up(i) {
		return i
	}
	return -1
}

// waitMetaLeader waits until the running nodes agree on a running meta
// leader and returns its index.
func (c *natsCluster) waitMetaLeader(timeout time.Duration) int {
	c.t.Helper()
	leader := -1
	testenv.Eventually(c.t, timeout, "a JetStream meta leader", func() bool {
		leader = c.metaLeader()
		return leader >= 0
	})
	return leader
}

// streamInfo asks the stream's leader for its info; nil while it has no
// leader (the request is not answered) or the answer is not in 2 s.
func (c *natsCluster) streamInfo(stream string) *jetstream.StreamInfo {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	s, err := c.js.Stream(ctx, stream)
	if err != nil {
		return nil
	}
	return s.CachedInfo()
}

// streamLeader is the index of the running node that says it leads
// stream, -1 if none does. Each node is asked through its monitoring port
// (/jsz), so the answer does not wait on a client request's timeout.
func (c *natsCluster) streamLeader(stream string) int {
	for i := range c.nodes {
		if !c.up(i) {
			continue
		}
		var jsz struct {
			Accounts []struct {
				Streams []struct {
					Name string `json:"name"`
				} `json:"stream_detail"`
			} `json:"account_details"`
		}
		if !c.monitor(i, "/jsz?accounts=true&streams=true&stream-leader-only=true", &jsz) {
			continue
		}
		for _, a := range jsz.Accounts {
			for _, st := range a.Streams {
				if st.Name == stream {
					return i
				}
			}
		}
	}
	return -1
}

// waitStreamLeader waits until stream has a running leader and returns its
// index.
func (c *natsCluster) waitStreamLeader(stream string, timeout time.Duration) int {
	c.t.Helper()
	leader := -1
	testenv.Eventually(c.t, timeout, "a leader of stream "+stream, func() bool {
		leader = c.streamLeader(stream)
		return leader >= 0
	})
	return leader
}

// waitHealthy waits until every node runs and answers /healthz with 200:
// JetStream is current with the meta leader and every stream and consumer
// replica it holds is current with its leader.
func (c *natsCluster) waitHealthy(timeout time.Duration) {
	c.t.Helper()
	// Every 100 ms: each failed check is a warning in the node's log.
	poll(c.t, timeout, 100*time.Millisecond, "every NATS node healthy (/healthz)", func() bool {
		for i := range c.nodes {
			if !c.up(i) || !c.monitor(i, "/healthz", nil) {
				return false
			}
		}
		return true
	})
}

// waitCurrent waits until each stream has a leader and its two other
// replicas are current and online (R3).
func (c *natsCluster) waitCurrent(streams []string, timeout time.Duration) {
	c.t.Helper()
	for _, st := range streams {
		testenv.Eventually(c.t, timeout, "every replica of stream "+st+" current", func() bool {
			info := c.streamInfo(st)
			if info == nil || info.Cluster == nil || info.Cluster.Leader == "" || len(info.Cluster.Replicas) != 2 {
				return false
			}
			for _, r := range info.Cluster.Replicas {
				if !r.Current || r.Offline {
					return false
				}
			}
			return true
		})
	}
}

// kill9 kills node i with SIGKILL.
func (c *natsCluster) kill9(i int) { c.nodes[i].kill9() }

// restart starts node i again on its configuration and store.
func (c *natsCluster) restart(i int) { c.nodes[i].start() }
