package status

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/turnstile-dev/turnstile/engine"
	"github.com/turnstile-dev/turnstile/events"
)

// Report is the state of the NATS servers and streams at one moment.
type Report struct {
	Nodes   []Node   `json:"nodes"`
	Streams []Stream `json:"streams"`
	// Partitions is who handles commands: P partitions, each pulled by
	// one engine at a time.
	Partitions []Partition `json:"partitions"`
	// PartitionsError says why Partitions is empty: the command stream did
	// not answer.
	PartitionsError string `json:"partitions_error,omitempty"`
	// P is the number of partitions the command stream records; 0 when it
	// did not answer (PartitionsError).
	P int `json:"p,omitempty"`
	// Engines are the live engines (serves), oldest first.
	Engines []Engine `json:"engines"`
}

// Node is one NATS server.
type Node struct {
	Name    string `json:"name"`
	Cluster string `json:"cluster,omitempty"`
	// Version is known for the server this client is connected to only.
	Version string `json:"version,omitempty"`
	// JetStream: the server holds a replica of a Turnstile stream, or is
	// the connected server and answers JetStream requests.
	JetStream bool `json:"jetstream"`
	// Connected: this client's connection is to this server.
	Connected bool `json:"connected"`
	// Offline: a stream's leader reports this server's replica offline.
	Offline bool `json:"offline"`
	// Leads are the streams this server leads.
	Leads []string `json:"leads"`
}

// Stream is one Turnstile stream.
type Stream struct {
	Name     string `json:"name"`
	Replicas int    `json:"replicas"`
	// Leader is the server that orders its writes; "" while it has none
	// (an election is under way, or too few replicas are up).
	Leader   string     `json:"leader"`
	Messages uint64     `json:"messages"`
	Bytes    uint64     `json:"bytes"`
	LastSeq  uint64     `json:"last_seq"`
	Peers    []Peer     `json:"peers"`
	Consumer []Consumer `json:"consumers"`
	// Error says why the stream did not answer (no leader, say); the
	// other fields are then empty.
	Error string `json:"error,omitempty"`
}

// Peer is a replica of a stream other than the leader's, as the leader
// sees it.
type Peer struct {
	Name string `json:"name"`
	// Current: caught up with the leader.
	Current bool `json:"current"`
	Offline bool `json:"offline"`
	// Lag is how many operations it is behind the leader.
	Lag uint64 `json:"lag"`
	// ActiveMS is how long ago the leader last heard from it.
	ActiveMS int64 `json:"active_ms"`
}

// Consumer is a durable consumer's backlog.
type Consumer struct {
	Name   string `json:"name"`
	Leader string `json:"leader"`
	// Pending messages not yet delivered; AckPending delivered and not yet
	// acknowledged; Redelivered delivered more than once and unacked.
	Pending     uint64 `json:"pending"`
	AckPending  int    `json:"ack_pending"`
	Redelivered int    `json:"redelivered"`
	// WaitingPulls are open pull requests: roughly, the engines (or
	// workers) pulling from it now.
	WaitingPulls int `json:"waiting_pulls"`
}

// Engine is a live engine: a serve's entry in the members bucket.
type Engine struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	// Since is when it opened.
	Since time.Time `json:"since"`
	// Partitions are those it pulls.
	Partitions []int `json:"partitions"`
	// P is the number of partitions it opened with, as it announces it; 0
	// from an engine of a release that did not announce it.
	P int `json:"p,omitempty"`
	// PMismatch: P is not the command stream's (Report.P). Its partitions
	// name other workspaces than the stream stores there: it leaves the
	// members once it reads the stream's P, and until then the engines
	// with another P take and let go of nothing (engine/owner.go, agree).
	PMismatch bool `json:"p_mismatch"`
	// Provisioner is the container engine its serve provisions on, as it
	// announces it ("docker <daemon ID>", "sim <state file>@<host>":
	// provisioner.go), and ProvisionerHint its description for people;
	// both empty from a release that did not announce them. Every serve
	// of an installation must use the same one (OtherProvisioners).
	Provisioner     string `json:"provisioner,omitempty"`
	ProvisionerHint string `json:"provisioner_hint,omitempty"`
}

// Partition is a share of the workspaces and who handles its commands.
type Partition struct {
	ID int `json:"id"`
	// Consumers are the durable consumers the partition's commands come
	// through, as stream/consumer.
	Consumers []string `json:"consumers"`
	// Owner says which engine handles the partition.
	Owner string `json:"owner"`
}

// engineDurable names the engines' consumers on the command and system
// streams and their members bucket (cmd/turnstile's engineDurable).
const engineDurable = events.DefaultEngineDurable

// AskTimeout bounds each stream's info request: a request to a stream
// whose leader just died goes unanswered, and a report should say so
// rather than wait.
const AskTimeout = 3 * time.Second

// Read takes a report over nc. A stream that does not answer within
// AskTimeout is reported with its Error; Read fails only when ctx ends (or
// nc is unusable).
func Read(ctx context.Context, nc *nats.Conn, names events.Names) (Report, error) {
	var r Report
	js, err := jetstream.New(nc)
	if err != nil {
		return r, fmt.Errorf("status: %w", err)
	}
	nodes := map[string]*Node{}
	node := func(name string) *Node {
		if n, ok := nodes[name]; ok {
			return n
		}
		n := &Node{Name: name, Leads: []string{}}
		nodes[name] = n
		return n
	}
	if nc != nil && nc.ConnectedServerName() != "" {
		n := node(nc.ConnectedServerName())
		n.Connected, n.Version, n.Cluster = true, nc.ConnectedServerVersion(), nc.ConnectedClusterName()
	}
	for _, name := range []string{names.CommandStream(), names.SystemStream(), names.EventStream()} {
		s, err := readStream(ctx, js, name, node)
		if err != nil {
			if ctx.Err() != nil {
				return Report{}, fmt.Errorf("stream %s: %w", name, err)
			}
			s = Stream{Name: name, Peers: []Peer{}, Consumer: []Consumer{}, Error: err.Error()}
		}
		r.Streams = append(r.Streams, s)
	}
	for _, n := range nodes {
		if n.Connected {
			n.JetStream = true // it answered the stream info requests
		}
		r.Nodes = append(r.Nodes, *n)
	}
	slices.SortFunc(r.Nodes, func(a, b Node) int { return strings.Compare(a.Name, b.Name) })
	r.P, r.Engines, r.Partitions, err = readPartitions(ctx, js, names)
	if err != nil {
		r.PartitionsError = err.Error()
	}
	return r, nil
}

// readPartitions returns the command stream's P, the live engines with
// the P each announces and which partition each pulls; an owner is
// "unknown" if the members bucket does not answer, and there are no
// partitions (nor engines) if the command stream does not.
func readPartitions(ctx context.Context, js jetstream.JetStream, names events.Names) (int, []Engine, []Partition, error) {
	ctx, cancel := context.WithTimeout(ctx, AskTimeout)
	defer cancel()
	engines := []Engine{}
	parts, err := events.ReadPartitions(ctx, js, names)
	if err != nil {
		return 0, engines, []Partition{}, err
	}
	owner := map[int]string{}
	members, err := engine.ReadMembers(ctx, js, names, engineDurable)
	for _, m := range members {
		engines = append(engines, Engine{ID: m.ID, Name: m.Name, Since: m.Since, Partitions: m.Partitions,
			P: m.P, PMismatch: m.P != 0 && m.P != parts, Provisioner: m.Provisioner, ProvisionerHint: m.ProvisionerHint})
		for _, k := range m.Partitions {
			owner[k] = m.Name
		}
	}
	out := make([]Partition, 0, parts)
	for k := range parts {
		c := events.EngineConsumer(engineDurable, k)
		p := Partition{ID: k, Consumers: []string{names.CommandStream() + "/" + c, names.SystemStream() + "/" + c}, Owner: owner[k]}
		switch {
		case err != nil:
			p.Owner = "unknown: " + err.Error()
		case p.Owner == "":
			p.Owner = "none: waiting for an engine to take it over"
		}
		out = append(out, p)
	}
	return parts, engines, out, nil
}

// readStream reads one stream's info and its durable consumers'.
func readStream(ctx context.Context, js jetstream.JetStream, name string, node func(string) *Node) (Stream, error) {
	ctx, cancel := context.WithTimeout(ctx, AskTimeout)
	defer cancel()
	st, err := js.Stream(ctx, name)
	if err != nil {
		return Stream{}, err
	}
	info := st.CachedInfo()
	s := Stream{Name: name, Replicas: max(info.Config.Replicas, 1), Messages: info.State.Msgs, Bytes: info.State.Bytes,
		LastSeq: info.State.LastSeq, Peers: []Peer{}, Consumer: []Consumer{}}
	if ci := info.Cluster; ci != nil {
		s.Leader = ci.Leader
		if ci.Leader != "" {
			n := node(ci.Leader)
			n.JetStream = true
			n.Leads = append(n.Leads, name)
			if n.Cluster == "" {
				n.Cluster = ci.Name
			}
		}
		for _, p := range ci.Replicas {
			n := node(p.Name)
			n.JetStream = true
			n.Offline = n.Offline || p.Offline
			if n.Cluster == "" {
				n.Cluster = ci.Name
			}
			s.Peers = append(s.Peers, Peer{Name: p.Name, Current: p.Current, Offline: p.Offline, Lag: p.Lag,
				ActiveMS: p.Active.Milliseconds()})
		}
	}
	lister := st.ListConsumers(ctx)
	for ci := range lister.Info() {
		if ci.Config.Durable == "" {
			continue // ordered and other ephemeral readers
		}
		c := Consumer{Name: ci.Name, Pending: ci.NumPending, AckPending: ci.NumAckPending,
			Redelivered: ci.NumRedelivered, WaitingPulls: ci.NumWaiting}
		if ci.Cluster != nil {
			c.Leader = ci.Cluster.Leader
		}
		s.Consumer = append(s.Consumer, c)
	}
	if err := lister.Err(); err != nil {
		return Stream{}, fmt.Errorf("consumers: %w", err)
	}
	slices.SortFunc(s.Consumer, func(a, b Consumer) int { return strings.Compare(a.Name, b.Name) })
	return s, nil
}

// Lagging reports the replicas and consumers that are behind: for an
// operator's one-line summary.
func (r Report) Lagging() []string {
	var out []string
	for _, s := range r.Streams {
		if s.Error != "" {
			out = append(out, fmt.Sprintf("stream %s did not answer: %s", s.Name, s.Error))
		}
		if s.Leader == "" && s.Replicas > 1 {
			out = append(out, fmt.Sprintf("stream %s has no leader", s.Name))
		}
		for _, p := range s.Peers {
			if p.Offline || !p.Current {
				out = append(out, fmt.Sprintf("stream %s: replica on %s is %s (lag %d)", s.Name, p.Name, peerState(p), p.Lag))
			}
		}
	}
	return out
}

// OtherP reports the engines whose P is not the command stream's: for an
// operator's one-line summary, saying which serve to restart.
func (r Report) OtherP() []string {
	var out []string
	for _, e := range r.Engines {
		if e.PMismatch {
			out = append(out, fmt.Sprintf("engine %s (%s) has P=%d, the command stream %d: while it is a member, the engines with another P "+
				"take and let go of no partition; restart that serve with --partitions %d (or none)", e.Name, e.ID, e.P, r.P, r.P))
		}
	}
	return out
}

func peerState(p Peer) string {
	switch {
	case p.Offline:
		return "offline"
	case !p.Current:
		return "catching up"
	}
	return "current"
}
