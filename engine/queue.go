package engine

import (
	"cmp"
	"slices"
	"sync"

	"github.com/nats-io/nats.go/jetstream"
)

// queued is a command waiting for its workspace, with its stream sequence.
// A hold is one without msg: a command an earlier engine took and did not
// finish, which comes back to this engine (or is finished by another)
// later. The workspace's later commands wait behind it.
type queued struct {
	msg jetstream.Msg
	seq uint64
	id  string // a hold's command id
}

// hold names a command held for in the queue.
type hold struct {
	ws  string
	seq uint64
	id  string
}

// queue holds commands per workspace and hands out workspaces, never one
// that is already being worked on: that is what keeps a workspace's commands
// in order while different workspaces run in parallel. A workspace's
// commands are kept in stream order, so a redelivered command goes before
// later ones still waiting.
type queue struct {
	mu      sync.Mutex
	pending map[string][]queued
	// active: in ready or being worked on. A workspace whose first
	// command is a hold is neither.
	active map[string]bool
	ready  chan string
	closed bool
}

func newQueue(capacity int) *queue {
	return &queue{
		pending: make(map[string][]queued),
		active:  make(map[string]bool),
		// Each workspace is in ready at most once and holds at least one
		// pending message, so MaxAckPending bounds it and push never blocks.
		// Redeliveries can add a workspace's message twice; double it.
		ready: make(chan string, 2*capacity+1),
	}
}

// insert puts e among ws's commands in stream order; one of the same
// sequence (a redelivery, or the command a hold waits for) is replaced.
// Lock held.
func (q *queue) insert(ws string, e queued) {
	p := q.pending[ws]
	if e.seq != 0 { // zero: no metadata, it goes last
		for i, x := range p {
			if x.seq == e.seq {
				p[i] = e
				return
			}
		}
		if i := slices.IndexFunc(p, func(x queued) bool { return x.seq > e.seq || x.seq == 0 }); i >= 0 {
			q.pending[ws] = slices.Insert(p, i, e)
			return
		}
	}
	q.pending[ws] = append(p, e)
}

// wake queues ws for a worker if it is idle and its first command can run.
// Lock held.
func (q *queue) wake(ws string) {
	if p := q.pending[ws]; !q.active[ws] && len(p) > 0 && p[0].msg != nil {
		q.active[ws] = true
		q.ready <- ws
	}
}

func (q *queue) push(ws string, m jetstream.Msg) {
	var seq uint64
	if md, err := m.Metadata(); err == nil {
		seq = md.Sequence.Stream
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return
	}
	q.insert(ws, queued{msg: m, seq: seq})
	q.wake(ws)
}

// hold makes h.ws's later commands wait until h's command arrives (push)
// or release drops the hold.
func (q *queue) hold(h hold) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.closed {
		q.insert(h.ws, queued{seq: h.seq, id: h.id})
	}
}

// release drops the hold of ws at seq, if it still waits.
func (q *queue) release(ws string, seq uint64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	p := q.pending[ws]
	i := slices.IndexFunc(p, func(x queued) bool { return x.seq == seq && x.msg == nil })
	if i < 0 || q.closed {
		return
	}
	q.pending[ws] = slices.Delete(p, i, i+1)
	if len(q.pending[ws]) == 0 && !q.active[ws] {
		delete(q.pending, ws)
		delete(q.active, ws)
		return
	}
	q.wake(ws)
}

// holds returns the holds still waiting.
func (q *queue) holds() []hold {
	q.mu.Lock()
	defer q.mu.Unlock()
	var hs []hold
	for ws, p := range q.pending {
		for _, x := range p {
			if x.msg == nil {
				hs = append(hs, hold{ws: ws, seq: x.seq, id: x.id})
			}
		}
	}
	return hs
}

// behindHolds returns the commands that wait behind a hold.
func (q *queue) behindHolds() []jetstream.Msg {
	q.mu.Lock()
	defer q.mu.Unlock()
	var ms []jetstream.Msg
	for _, p := range q.pending {
		if len(p) == 0 || p[0].msg != nil {
			continue
		}
		for _, x := range p {
			if x.msg != nil {
				ms = append(ms, x.msg)
			}
		}
	}
	return ms
}

// next blocks for a workspace with work and takes its oldest command.
func (q *queue) next() (string, jetstream.Msg, bool) {
	for ws := range q.ready {
		q.mu.Lock()
		if q.closed {
			q.mu.Unlock()
			return "", nil, false
		}
		msgs := q.pending[ws]
		if len(msgs) == 0 || msgs[0].msg == nil {
			// Cannot happen while holds are only made before the first
			// push; kept safe: the workspace waits for its hold.
			delete(q.active, ws)
			q.mu.Unlock()
			continue
		}
		m := msgs[0].msg
		msgs[0] = queued{}
		q.pending[ws] = msgs[1:]
		q.mu.Unlock()
		return ws, m, true
	}
	return "", nil, false
}

// done releases ws; if more commands wait, it is queued again (behind the
// others, for fairness), unless the first of them is a hold.
func (q *queue) done(ws string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.pending[ws]) == 0 || q.closed {
		delete(q.pending, ws)
		delete(q.active, ws)
		return
	}
	delete(q.active, ws)
	q.wake(ws)
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
		for _, m := range msgs {
			if m.msg != nil {
				left = append(left, m)
			}
		}
	}
	slices.SortFunc(left, func(a, b queued) int { return cmp.Compare(a.seq, b.seq) })
	out := make([]jetstream.Msg, len(left))
	for i, l := range left {
		out[i] = l.msg
	}
	return out
}
