package engine

import (
	"sync"

	"github.com/nats-io/nats.go/jetstream"
)

// queue holds commands per workspace and hands out workspaces, never one
// that is already being worked on: that is what keeps a workspace's commands
// in order while different workspaces run in parallel.
type queue struct {
	mu      sync.Mutex
	pending map[string][]jetstream.Msg
	active  map[string]bool
	ready   chan string
	closed  bool
}

func newQueue(capacity int) *queue {
	return &queue{
		pending: make(map[string][]jetstream.Msg),
		active:  make(map[string]bool),
		// Each workspace is in ready at most once and holds at least one
		// pending message, so MaxAckPending bounds it and push never blocks.
		// Redeliveries can add a workspace's message twice; double it.
		ready: make(chan string, 2*capacity+1),
	}
}

func (q *queue) push(ws string, m jetstream.Msg) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return
	}
	q.pending[ws] = append(q.pending[ws], m)
	if !q.active[ws] && len(q.pending[ws]) == 1 {
		q.active[ws] = true
		q.ready <- ws
	}
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
	m := msgs[0]
	msgs[0] = nil
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

// close wakes every worker; queued commands stay unacked and are
// redelivered to whichever engine runs next.
func (q *queue) close() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.closed {
		q.closed = true
		close(q.ready)
	}
}
