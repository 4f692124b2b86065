package engine

import (
	"cmp"
	"slices"
	"sync"

	"github.com/nats-io/nats.go/jetstream"
)

// queued is a command waiting for its workspace, with its stream and
// stream sequence (user commands and system reports come from two streams,
// whose sequences are unrelated).
type queued struct {
	msg    jetstream.Msg
	stream string
	seq    uint64
}

// queue holds commands per workspace and hands out workspaces, never one
// that is already being worked on: that is what keeps a workspace's commands
// in order while different workspaces run in parallel. A workspace's
// commands are kept in stream order (per stream: between the user command
// and system report streams, arrival order), so a redelivered command goes
// before later ones of its stream still waiting. offer holds at most
// perWorkspace commands waiting per workspace: one workspace's flood must
// not fill the consumer's MaxAckPending and stall everyone else's commands
// behind it.
type queue struct {
	mu           sync.Mutex
	pending      map[string][]queued
	active       map[string]bool // in ready or being worked on
	ready        chan string
	closed       bool
	perWorkspace int // 0: no cap
}

func newQueue(capacity, perWorkspace int) *queue {
	return &queue{
		perWorkspace: max(perWorkspace, 0),
		pending:      make(map[string][]queued),
		active:       make(map[string]bool),
		// Each workspace is in ready at most once and holds at least one
		// pending message, so MaxAckPending bounds it and push never blocks.
		// Redeliveries and recovered commands can add a workspace's
		// message twice; double it.
		ready: make(chan string, 2*capacity+1),
	}
}

// push queues m whatever the workspace's queue holds: for commands that
// must not be refused (recovered ones, system reports).
func (q *queue) push(ws string, m jetstream.Msg) {
	q.add(ws, m, 0)
}

// offer queues m unless its workspace already has perWorkspace commands
// waiting (besides the one being handled); false means m was not queued
// and is the caller's to refuse. A copy of a command already waiting
// replaces it, full or not.
func (q *queue) offer(ws string, m jetstream.Msg) bool {
	return q.add(ws, m, q.perWorkspace)
}

func (q *queue) add(ws string, m jetstream.Msg, limit int) bool {
	var seq uint64
	var stream string
	if md, err := m.Metadata(); err == nil {
		seq, stream = md.Sequence.Stream, md.Stream
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return true // dropped: handed back by the server after its ack wait
	}
	p := q.pending[ws]
	if seq != 0 { // zero: no metadata, it goes last
		// A redelivery of a command still waiting here replaces it rather
		// than queueing it twice.
		for i, x := range p {
			if x.seq == seq && x.stream == stream {
				p[i].msg = m
				return true
			}
		}
	}
	if limit > 0 && len(p) >= limit {
		return false
	}
	if seq != 0 {
		if i := slices.IndexFunc(p, func(x queued) bool { return (x.stream == stream && x.seq > seq) || x.seq == 0 }); i >= 0 {
			p = slices.Insert(p, i, queued{msg: m, stream: stream, seq: seq})
		} else {
			p = append(p, queued{msg: m, stream: stream, seq: seq})
		}
	} else {
		p = append(p, queued{msg: m, seq: seq})
	}
	q.pending[ws] = p
	if !q.active[ws] {
		q.active[ws] = true
		q.ready <- ws
	}
	return true
}

// next blocks for a workspace with work and takes its oldest command.
func (q *queue) next() (string, jetstream.Msg, bool) {
	ws, ok := <-q.ready
	if !ok {
		return "", nil, false
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return "", nil, false
	}
	msgs := q.pending[ws]
	m := msgs[0].msg
	msgs[0] = queued{}
	q.pending[ws] = msgs[1:]
	return ws, m, true
}

// done releases ws; if more commands wait, it is queued again (behind the
// others, for fairness).
func (q *queue) done(ws string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.pending[ws]) == 0 || q.closed {
		delete(q.pending, ws)
		delete(q.active, ws)
		return
	}
	q.ready <- ws
}

// close wakes every worker and returns the commands still queued, oldest
// first, for the caller to hand back once the commands being handled have
// been handed back (they are older).
func (q *queue) close() []jetstream.Msg {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return nil
	}
	q.closed = true
	close(q.ready)
	var left []queued
	for _, msgs := range q.pending {
		left = append(left, msgs...)
	}
	slices.SortFunc(left, func(a, b queued) int { return cmp.Compare(a.seq, b.seq) })
	out := make([]jetstream.Msg, len(left))
	for i, l := range left {
		out[i] = l.msg
	}
	return out
}
