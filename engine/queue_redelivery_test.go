package engine

import (
	"slices"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
)

// deliveredMsg is a command of the queue's tests delivered n times.
type deliveredMsg struct {
	seqMsg
	n uint64
}

func (m deliveredMsg) Metadata() (*jetstream.MsgMetadata, error) {
	return &jetstream.MsgMetadata{Sequence: jetstream.SequencePair{Stream: m.seq}, NumDelivered: m.n}, nil
}

// takeSeq is take for deliveredMsg: the workspace and stream sequence.
func takeSeq(t *testing.T, q *queue) (string, uint64) {
	t.Helper()
	if len(q.ready) == 0 {
		t.Fatal("no workspace ready")
	}
	ws, j, ok := q.next()
	if !ok {
		t.Fatal("queue closed")
	}
	return ws, j.msg.(deliveredMsg).seq
}

// offer never refuses a command that may have been handled already, full
// or not: a redelivery, a delivery of the command being handled, or of a
// command a recovered copy was queued of. Each is queued past the cap, in
// stream order; a first delivery of another command still is not.
func TestQueueCapSparesCommandsHandledBefore(t *testing.T) {
	q := newQueue(16, 2)
	q.pushRecovered("a", deliveredMsg{seqMsg: seqMsg{seq: 1}, n: 1})
	q.pushRecovered("a", deliveredMsg{seqMsg: seqMsg{seq: 2}, n: 1})
	q.pushRecovered("a", deliveredMsg{seqMsg: seqMsg{seq: 3}, n: 1})
	if ws, seq := takeSeq(t, q); ws != "a" || seq != 1 {
		t.Fatalf("took %s/%d, want a/1", ws, seq)
	}
	// 1's copy is in hand, 2 and 3 wait: the workspace is full.
	if q.offer("a", deliveredMsg{seqMsg: seqMsg{seq: 4}, n: 1}) {
		t.Fatal("a first delivery of a new command was queued past the cap of 2")
	}
	if !q.offer("a", deliveredMsg{seqMsg: seqMsg{seq: 1}, n: 1}) {
		t.Fatal("a delivery of the command in hand was refused")
	}
	if !q.offer("a", deliveredMsg{seqMsg: seqMsg{seq: 5}, n: 2}) {
		t.Fatal("a redelivery was refused")
	}
	q.pushRecovered("b", deliveredMsg{seqMsg: seqMsg{seq: 6}, n: 1})
	if ws, seq := takeSeq(t, q); ws != "b" || seq != 6 {
		t.Fatalf("took %s/%d, want b/6", ws, seq)
	}
	q.done("b") // 6's copy handled: its delivery may find its outcome
	for seq := uint64(7); seq <= 8; seq++ {
		if !q.offer("b", deliveredMsg{seqMsg: seqMsg{seq: seq}, n: 1}) {
			t.Fatalf("command %d refused under the cap", seq)
		}
	}
	if !q.offer("b", deliveredMsg{seqMsg: seqMsg{seq: 6}, n: 1}) {
		t.Fatal("a delivery of a command recovered here was refused")
	}
	q.done("a")
	got := map[string][]uint64{}
	for len(q.ready) > 0 {
		ws, seq := takeSeq(t, q)
		got[ws] = append(got[ws], seq)
		q.done(ws)
	}
	if want := []uint64{1, 2, 3, 5}; !slices.Equal(got["a"], want) {
		t.Fatalf("a's commands came out as %v, want %v", got["a"], want)
	}
	if want := []uint64{6, 7, 8}; !slices.Equal(got["b"], want) {
		t.Fatalf("b's commands came out as %v, want %v", got["b"], want)
	}
	q.close()
}
