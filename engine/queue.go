package engine

import (
	"cmp"
	"slices"
	"sync"

	"github.com/nats-io/nats.go/jetstream"
)

// job is one command to handle: a delivery from the engine's durable
// consumer, or a recovered copy (recover.go) of a command an earlier engine
// took and did not finish, read again from the stream. handle treats a
// recovered command as a redelivery (it looks for the stored outcome
// first), and the engine never hands one back: its delivery on the durable
// consumer is still pending and is settled when it comes back. (The copy's
// own acks go to the reader that fetched it, which takes no acks and is gone
// by then.)
type job struct {
	msg       jetstream.Msg
	recovered bool
	// again: a delivery of a command this engine queued a recovered copy of
	// (a sweep or catch-up may copy one still on its way here): the copy may
	// have been handled already, so the delivery is handled as a redelivery.
	again bool
}

// queued is a command waiting for its workspace, with its stream and
// stream sequence (user commands and system reports come from two streams,
// whose sequences are unrelated).
type queued struct {
	job
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
	active       map[string]bool   // in ready or being worked on
	working      map[string]queued // the command being handled, per workspace
	ready        chan string
	closed       bool
	perWorkspace int // 0: no cap
	// copied are the recovered copies queued lately (stream/seq), oldest
	// first in copiedOrder, at most maxCopied.
	copied      map[copyKey]struct{}
	copiedOrder []copyKey
}

type copyKey struct {
	stream string
	seq    uint64
}

// maxCopied bounds the recovered copies remembered: more than a
// partition's commands in flight.
const maxCopied = 1 << 16

func newQueue(capacity, perWorkspace int) *queue {
	return &queue{
		perWorkspace: max(perWorkspace, 0),
		pending:      make(map[string][]queued),
		active:       make(map[string]bool),
		working:      make(map[string]queued),
		copied:       make(map[copyKey]struct{}),
		// Each workspace is in ready at most once and holds at least one
		// pending message, so MaxAckPending bounds it and push never blocks.
		// Redeliveries and recovered commands can add a workspace's
		// message twice; double it.
		ready: make(chan string, 2*capacity+1),
	}
}

// push queues m whatever the workspace's queue holds: for commands that
// must not be refused (system reports).
func (q *queue) push(ws string, m jetstream.Msg) {
	q.add(ws, job{msg: m}, 0)
}

// pushRecovered queues a recovered command (see job) whatever the
// workspace's queue holds: before the first pull, or at a catch-up
// (gap.go).
func (q *queue) pushRecovered(ws string, m jetstream.Msg) {
	q.add(ws, job{msg: m, recovered: true}, 0)
}

// offer queues m unless its workspace already has perWorkspace commands
// waiting (besides the one being handled); false means m was not queued
// and is the caller's to refuse. A copy of a command already waiting
// replaces it, full or not. A command that may have been handled already
// is queued past the limit, as system reports are: a redelivery, or a
// delivery of a command whose copy is being handled here or was recovered
// here. Its event may be stored and its outcome not yet (a handling that
// stopped between the two, or is between them now): refused busy, the
// busy outcome would take the place of the accepted one that handling
// records. It already counts against the consumer's MaxAckPending, and is
// settled from the stored outcome when its turn comes.
func (q *queue) offer(ws string, m jetstream.Msg) bool {
	return q.add(ws, job{msg: m}, q.perWorkspace)
}

func (q *queue) add(ws string, j job, limit int) bool {
	var seq uint64
	var stream string
	redelivered := false
	if md, err := j.msg.Metadata(); err == nil {
		seq, stream, redelivered = md.Sequence.Stream, md.Stream, md.NumDelivered > 1
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return true // dropped: handed back by the server after its ack wait
	}
	if seq != 0 {
		k := copyKey{stream, seq}
		if j.recovered {
			if _, ok := q.copied[k]; !ok {
				if len(q.copiedOrder) >= maxCopied {
					delete(q.copied, q.copiedOrder[0])
					q.copiedOrder = q.copiedOrder[1:]
				}
				q.copied[k] = struct{}{}
				q.copiedOrder = append(q.copiedOrder, k)
			}
		} else if _, ok := q.copied[k]; ok {
			j.again = true
		}
	}
	p := q.pending[ws]
	if seq != 0 { // zero: no metadata, it goes last
		// A redelivery of a command still waiting here replaces it rather
		// than queueing it twice (a delivery replaces a recovered copy, a
		// recovered copy never replaces a delivery: that one must be acked).
		for i, x := range p {
			if x.seq == seq && x.stream == stream {
				if !j.recovered || x.recovered {
					p[i].job = j
				}
				return true
			}
		}
	}
	if limit > 0 && len(p) >= limit && !redelivered && !j.again && (seq == 0 || !q.inHand(ws, stream, seq)) {
		return false
	}
	if seq != 0 {
		if i := slices.IndexFunc(p, func(x queued) bool { return (x.stream == stream && x.seq > seq) || x.seq == 0 }); i >= 0 {
			p = slices.Insert(p, i, queued{job: j, stream: stream, seq: seq})
		} else {
			p = append(p, queued{job: j, stream: stream, seq: seq})
		}
	} else {
		p = append(p, queued{job: j, seq: seq})
	}
	q.pending[ws] = p
	if !q.active[ws] {
		q.active[ws] = true
		q.ready <- ws
	}
	return true
}

// next blocks for a workspace with work and takes its oldest command.
func (q *queue) next() (string, job, bool) {
	for {
		ws, ok := <-q.ready
		if !ok {
			return "", job{}, false
		}
		if j, ok, closed := q.take(ws); closed {
			return "", job{}, false
		} else if ok {
			return ws, j, true
		}
	}
}

// take takes ws's oldest command; none if release emptied ws while it
// waited in ready.
func (q *queue) take(ws string) (j job, ok, closed bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return job{}, false, true
	}
	msgs := q.pending[ws]
	if len(msgs) == 0 {
		delete(q.pending, ws)
		delete(q.active, ws)
		return job{}, false, false
	}
	j = msgs[0].job
	q.working[ws] = msgs[0]
	msgs[0] = queued{}
	q.pending[ws] = msgs[1:]
	return j, true, false
}

// done releases ws; if more commands wait, it is queued again (behind the
// others, for fairness).
func (q *queue) done(ws string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	delete(q.working, ws)
	if len(q.pending[ws]) == 0 || q.closed {
		delete(q.pending, ws)
		delete(q.active, ws)
		return
	}
	q.ready <- ws
}

// holds reports whether the command at seq of stream is waiting or being
// handled here.
func (q *queue) holds(ws, stream string, seq uint64) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.inHand(ws, stream, seq) ||
		slices.ContainsFunc(q.pending[ws], func(x queued) bool { return x.seq == seq && x.stream == stream })
}

// inHand reports whether the command at seq of stream is being handled
// here. q.mu must be held.
func (q *queue) inHand(ws, stream string, seq uint64) bool {
	w, ok := q.working[ws]
	return ok && w.seq == seq && w.stream == stream
}

// close wakes every worker and returns the commands still queued, oldest
// first, for the caller to hand back once the commands being handled have
// been handed back (they are older). Recovered copies are left out: there
// is nothing of theirs to hand back.
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
	out := make([]jetstream.Msg, 0, len(left))
	for _, l := range left {
		if !l.recovered {
			out = append(out, l.msg)
		}
	}
	return out
}

// release takes out the commands waiting whose message is in (a partition
// this engine lets go of) and returns those to hand back, oldest first;
// recovered copies are dropped (nothing of theirs to hand back). Workspaces
// left empty stay in ready until next skips them.
func (q *queue) release(in func(jetstream.Msg) bool) []jetstream.Msg {
	q.mu.Lock()
	defer q.mu.Unlock()
	var left []queued
	for ws, msgs := range q.pending {
		kept := msgs[:0]
		for _, x := range msgs {
			if in(x.msg) {
				left = append(left, x)
			} else {
				kept = append(kept, x)
			}
		}
		clear(msgs[len(kept):])
		q.pending[ws] = kept
	}
	slices.SortFunc(left, func(a, b queued) int { return cmp.Compare(a.seq, b.seq) })
	out := make([]jetstream.Msg, 0, len(left))
	for _, l := range left {
		if !l.recovered {
			out = append(out, l.msg)
		}
	}
	return out
}

// handling reports whether a command whose message is in is being handled.
func (q *queue) handling(in func(jetstream.Msg) bool) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, w := range q.working {
		if in(w.msg) {
			return true
		}
	}
	return false
}
