package engine

import (
	"testing"

	"github.com/nats-io/nats.go/jetstream"
)

// seqMsg is a command as the queue sees it: its stream sequence alone.
type seqMsg struct {
	jetstream.Msg // the queue calls nothing else
	seq           uint64
}

func (m seqMsg) Metadata() (*jetstream.MsgMetadata, error) {
	return &jetstream.MsgMetadata{Sequence: jetstream.SequencePair{Stream: m.seq}}, nil
}

// take is next without blocking: the queue must have a workspace ready.
func take(t *testing.T, q *queue) (string, uint64) {
	t.Helper()
	if len(q.ready) == 0 {
		t.Fatal("no workspace ready")
	}
	ws, m, ok := q.next()
	if !ok {
		t.Fatal("queue closed")
	}
	return ws, m.(seqMsg).seq
}

func TestQueueHoldsAndOrder(t *testing.T) {
	q := newQueue(16)
	q.hold(hold{ws: "a", seq: 5, id: "c5"})
	q.push("a", seqMsg{seq: 9})
	q.push("b", seqMsg{seq: 10})
	if ws, seq := take(t, q); ws != "b" || seq != 10 {
		t.Fatalf("took %s/%d, want b/10: a waits behind its hold", ws, seq)
	}
	q.done("b")
	if len(q.ready) != 0 {
		t.Fatal("a was made ready behind its hold")
	}
	if got := q.behindHolds(); len(got) != 1 || got[0].(seqMsg).seq != 9 {
		t.Fatalf("behind holds: %v, want the command of seq 9", got)
	}
	// The held command comes back: it replaces the hold and goes first.
	q.push("a", seqMsg{seq: 5})
	if ws, seq := take(t, q); ws != "a" || seq != 5 {
		t.Fatalf("took %s/%d, want a/5", ws, seq)
	}
	// An older redelivery goes ahead of later commands still waiting.
	q.push("a", seqMsg{seq: 12})
	q.push("a", seqMsg{seq: 7})
	q.done("a")
	var got []uint64
	for range 3 {
		_, seq := take(t, q)
		got = append(got, seq)
		q.done("a")
	}
	if got[0] != 7 || got[1] != 9 || got[2] != 12 {
		t.Fatalf("order %v, want [7 9 12]", got)
	}
	if len(q.pending) != 0 || len(q.active) != 0 {
		t.Fatalf("left behind: pending %v, active %v", q.pending, q.active)
	}
}

func TestQueueRelease(t *testing.T) {
	q := newQueue(16)
	q.hold(hold{ws: "a", seq: 5, id: "c5"})
	q.hold(hold{ws: "c", seq: 6, id: "c6"})
	q.push("a", seqMsg{seq: 9})
	q.release("a", 5)
	if ws, seq := take(t, q); ws != "a" || seq != 9 {
		t.Fatalf("took %s/%d, want a/9 once its hold is released", ws, seq)
	}
	q.done("a")
	q.release("c", 6)
	if hs := q.holds(); len(hs) != 0 {
		t.Fatalf("holds left: %v", hs)
	}
	if len(q.pending) != 0 || len(q.active) != 0 {
		t.Fatalf("left behind: pending %v, active %v", q.pending, q.active)
	}
	if left := q.close(); len(left) != 0 {
		t.Fatalf("close handed back %d commands, want none", len(left))
	}
}
