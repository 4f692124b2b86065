package engine

import (
	"testing"

	"github.com/nats-io/nats.go/jetstream"
)

// seqMsg is a command as the queue sees it: its stream sequence alone.
type seqMsg struct {
	jetstream.Msg // the queue calls nothing else
	seq           uint64
	copy          int
}

func (m seqMsg) Metadata() (*jetstream.MsgMetadata, error) {
	return &jetstream.MsgMetadata{Sequence: jetstream.SequencePair{Stream: m.seq}}, nil
}

// take is next without blocking: the queue must have a workspace ready.
func take(t *testing.T, q *queue) (string, seqMsg) {
	t.Helper()
	if len(q.ready) == 0 {
		t.Fatal("no workspace ready")
	}
	ws, j, ok := q.next()
	if !ok {
		t.Fatal("queue closed")
	}
	return ws, j.msg.(seqMsg)
}

// A workspace's commands come out in stream order whatever order they
// arrive in (a redelivery after later commands, a recovered command before
// the pull), one at a time, and a copy of a waiting one replaces it.
func TestQueueStreamOrder(t *testing.T) {
	q := newQueue(16, 0)
	q.push("a", seqMsg{seq: 9})
	q.push("b", seqMsg{seq: 10})
	ws, m := take(t, q)
	if ws != "a" || m.seq != 9 {
		t.Fatalf("took %s/%d, want a/9", ws, m.seq)
	}
	q.push("a", seqMsg{seq: 12})
	q.push("a", seqMsg{seq: 7})           // redelivered while a is busy
	q.push("a", seqMsg{seq: 12, copy: 1}) // and another copy of 12
	if len(q.ready) != 1 {
		t.Fatalf("%d workspaces ready, want b alone: a is being worked on", len(q.ready))
	}
	if ws, m := take(t, q); ws != "b" || m.seq != 10 {
		t.Fatalf("took %s/%d, want b/10", ws, m.seq)
	}
	q.done("b")
	q.done("a")
	var got []seqMsg
	for range 2 {
		ws, m := take(t, q)
		if ws != "a" {
			t.Fatalf("took %s, want a", ws)
		}
		got = append(got, m)
		q.done("a")
	}
	if got[0].seq != 7 || got[1].seq != 12 || got[1].copy != 1 {
		t.Fatalf("took %+v, want 7 then the latest copy of 12", got)
	}
	if len(q.pending) != 0 || len(q.active) != 0 || len(q.ready) != 0 {
		t.Fatalf("left behind: pending %v, active %v, %d ready", q.pending, q.active, len(q.ready))
	}
	if left := q.close(); len(left) != 0 {
		t.Fatalf("close handed back %d commands, want none", len(left))
	}
}

// issue 12 item 10: offer holds at most the cap of commands waiting per
// workspace (besides the one being handled) and says so; other workspaces,
// a copy of a waiting command and push are not held to it.
func TestQueueCap(t *testing.T) {
	q := newQueue(16, 2)
	for seq := uint64(1); seq <= 2; seq++ {
		if !q.offer("a", seqMsg{seq: seq}) {
			t.Fatalf("command %d refused: only %d wait", seq, seq-1)
		}
	}
	if ws, m := take(t, q); ws != "a" || m.seq != 1 {
		t.Fatalf("took %s/%d, want a/1", ws, m.seq)
	}
	if !q.offer("a", seqMsg{seq: 3}) {
		t.Fatal("command 3 refused while 1 is handled and 2 waits")
	}
	if !q.offer("a", seqMsg{seq: 3}) {
		t.Fatal("a copy of a waiting command was refused")
	}
	if q.offer("a", seqMsg{seq: 4}) {
		t.Fatal("a third waiting command was queued past the cap of 2")
	}
	if !q.offer("b", seqMsg{seq: 5}) {
		t.Fatal("another workspace's command was refused")
	}
	q.push("a", seqMsg{seq: 6}) // a system report: queued regardless
	if n := len(q.pending["a"]); n != 3 {
		t.Fatalf("a has %d waiting, want 2 offered and 1 pushed", n)
	}
	q.close()
}

// streamMsg is a command of a named stream.
type streamMsg struct {
	seqMsg
	stream string
}

func (m streamMsg) Metadata() (*jetstream.MsgMetadata, error) {
	return &jetstream.MsgMetadata{Stream: m.stream, Sequence: jetstream.SequencePair{Stream: m.seq}}, nil
}

// User commands and system reports come from two streams with unrelated
// sequences (issue 12 item 2): one's sequence 5 is not a copy of the
// other's, and each stream keeps its own order.
func TestQueueTwoStreams(t *testing.T) {
	q := newQueue(16, 0)
	q.push("a", streamMsg{seqMsg{seq: 5}, "CMD"})
	q.push("a", streamMsg{seqMsg{seq: 5}, "SYS"}) // not a redelivery of CMD 5
	q.push("a", streamMsg{seqMsg{seq: 3}, "SYS"}) // before SYS 5, not before CMD 5
	var got []streamMsg
	for range 3 {
		_, j, ok := q.next()
		if !ok {
			t.Fatal("queue closed")
		}
		got = append(got, j.msg.(streamMsg))
		q.done("a")
	}
	want := []string{"CMD/5", "SYS/3", "SYS/5"}
	for i, m := range got {
		if s := m.stream + "/" + string(rune('0'+m.seq)); s != want[i] {
			t.Fatalf("took %v, want %v", got, want)
		}
	}
}

// A recovered copy goes first like any command, is marked so that handle
// treats it as a redelivery, is replaced by a delivery of the same command,
// and is never handed back on close: its delivery is still pending.
func TestQueueRecovered(t *testing.T) {
	q := newQueue(16, 0)
	q.pushRecovered("a", seqMsg{seq: 4})
	q.pushRecovered("b", seqMsg{seq: 5})
	q.offer("a", seqMsg{seq: 6})
	ws, j, ok := q.next()
	if !ok || ws != "a" || !j.recovered || j.msg.(seqMsg).seq != 4 {
		t.Fatalf("took %s %+v, want a's recovered 4", ws, j)
	}
	q.done("a")
	q.offer("b", seqMsg{seq: 5, copy: 1}) // its delivery arrives
	if p := q.pending["b"]; len(p) != 1 || p[0].recovered || p[0].msg.(seqMsg).copy != 1 {
		t.Fatalf("b holds %+v, want the delivery of 5 alone", p)
	}
	q.pushRecovered("c", seqMsg{seq: 7})
	left := q.close()
	if len(left) != 2 || left[0].(seqMsg).seq != 5 || left[1].(seqMsg).seq != 6 {
		t.Fatalf("close handed back %+v, want the deliveries 5 and 6, not the recovered 7", left)
	}
}

// A catch-up's recovered copy (gap.go) never replaces the delivery of the
// same command waiting here (that one must be acked), and holds tells what
// is waiting or being handled, so a catch-up leaves both out.
func TestQueueRecoveredKeepsDelivery(t *testing.T) {
	q := newQueue(16, 0)
	q.push("a", seqMsg{seq: 3})
	q.push("a", seqMsg{seq: 5})
	if _, m := take(t, q); m.seq != 3 {
		t.Fatalf("took %d, want 3", m.seq)
	}
	if !q.holds("a", "", 3) || !q.holds("a", "", 5) || q.holds("a", "", 4) || q.holds("b", "", 5) {
		t.Fatal("holds: want 3 (being handled) and 5 (waiting) of a, nothing else")
	}
	q.pushRecovered("a", seqMsg{seq: 5, copy: 1})
	q.pushRecovered("a", seqMsg{seq: 4, copy: 1})
	q.done("a")
	if q.holds("a", "", 3) {
		t.Fatal("holds 3 after it was done")
	}
	for _, want := range []seqMsg{{seq: 4, copy: 1}, {seq: 5}} {
		_, m := take(t, q)
		if m.seq != want.seq || m.copy != want.copy {
			t.Fatalf("took %d (copy %d), want %d (copy %d)", m.seq, m.copy, want.seq, want.copy)
		}
		q.done("a")
	}
}

// A delivery of a command whose recovered copy was queued here (a sweep
// after a failed pull can copy a command still on its way) is marked again:
// the copy may have been handled already, so handle looks for its outcome
// and event first.
func TestQueueDeliveryAfterCopyIsAgain(t *testing.T) {
	q := newQueue(16, 0)
	q.pushRecovered("a", seqMsg{seq: 4})
	if _, j, _ := q.next(); !j.recovered {
		t.Fatal("the copy is not recovered")
	}
	q.done("a")
	q.offer("a", seqMsg{seq: 4, copy: 1})
	q.offer("a", seqMsg{seq: 5})
	if _, j, _ := q.next(); !j.again || j.recovered || j.msg.(seqMsg).copy != 1 {
		t.Fatalf("the delivery of 4: %+v, want again", j)
	}
	q.done("a")
	if _, j, _ := q.next(); j.again {
		t.Fatalf("5 was never copied: %+v", j)
	}
	q.done("a")
}

// release takes out the waiting commands of a partition let go, oldest
// first, leaving the others and dropping recovered copies; a workspace it
// empties is skipped by next; handling tells what is in hand.
func TestQueueRelease(t *testing.T) {
	q := newQueue(16, 0)
	q.offer("a", seqMsg{seq: 7})
	q.offer("b", seqMsg{seq: 2})
	q.offer("b", seqMsg{seq: 9})
	q.pushRecovered("c", seqMsg{seq: 1})
	q.offer("d", seqMsg{seq: 3})
	ws, _ := take(t, q) // a's 7 in hand
	if ws != "a" {
		t.Fatalf("took %s first", ws)
	}
	inBC := func(m jetstream.Msg) bool { s := m.(seqMsg).seq; return s == 2 || s == 9 || s == 1 || s == 7 }
	left := q.release(inBC)
	if len(left) != 2 || left[0].(seqMsg).seq != 2 || left[1].(seqMsg).seq != 9 {
		t.Fatalf("released %+v, want b's 2 and 9 (not c's copy, not a's 7 in hand)", left)
	}
	if !q.handling(inBC) {
		t.Fatal("a's 7 is in hand")
	}
	q.done("a")
	if q.handling(inBC) {
		t.Fatal("nothing of the partition is in hand any more")
	}
	ws, m := take(t, q) // b and c were emptied; d's 3 is next
	if ws != "d" || m.seq != 3 {
		t.Fatalf("took %s %d, want d 3", ws, m.seq)
	}
	q.done("d")
	if len(q.ready) != 0 {
		t.Fatalf("%d workspaces still ready", len(q.ready))
	}
	q.close()
}
