package events

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// RawMsg is one message of the event stream as stored, not decoded: for a
// reader that decodes on its own terms (the projector's bulk decoding).
type RawMsg struct {
	StreamSeq uint64
	Subject   string
	Data      []byte
	Time      time.Time // stored at
	// Pending is how many messages the stream held beyond this one when it
	// was delivered (Tail only).
	Pending uint64
}

// ErrGap means the stream no longer holds a message a reader needs (it was
// purged or deleted).
var ErrGap = errors.New("stream gap")

// StreamState is where the event stream begins and ends.
type StreamState struct {
	FirstSeq, LastSeq uint64
	Msgs              uint64
	// Deleted is how many messages between FirstSeq and LastSeq are gone.
	Deleted uint64
}

// State returns the event stream's current state.
func (s *Store) State(ctx context.Context) (StreamState, error) {
	info, err := s.stream.Info(ctx)
	if err != nil {
		return StreamState{}, fmt.Errorf("event stream info: %w", err)
	}
	st := info.State
	return StreamState{FirstSeq: st.FirstSeq, LastSeq: st.LastSeq, Msgs: st.Msgs, Deleted: uint64(st.NumDeleted)}, nil
}

// StoredAt returns when the message at stream sequence seq was stored.
func (s *Store) StoredAt(ctx context.Context, seq uint64) (time.Time, error) {
	msg, err := s.stream.GetMsg(ctx, seq)
	if err != nil {
		return time.Time{}, fmt.Errorf("message %d: %w", seq, err)
	}
	return msg.Time, nil
}

// Tail is a live read of the whole event stream (events and outcomes) from
// a stream sequence on, including what is appended later. It is for one
// goroutine.
type Tail struct {
	it jetstream.MessagesContext
}

// Tail starts reading every message of the event stream from stream
// sequence from on through an ordered consumer (no acks; gone when the
// read stops), keeping up to pull messages in flight. Stop it when done.
func (s *Store) Tail(ctx context.Context, from uint64, pull int) (*Tail, error) {
	cons, err := s.stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: max(from, 1)})
	if err != nil {
		return nil, fmt.Errorf("tail from %d: consumer: %w", from, err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(pull))
	if err != nil {
		return nil, fmt.Errorf("tail from %d: %w", from, err)
	}
	return &Tail{it: it}, nil
}

// Next blocks for the next message until ctx ends.
func (t *Tail) Next(ctx context.Context) (RawMsg, error) {
	m, err := t.it.Next(jetstream.NextContext(ctx))
	if err != nil {
		return RawMsg{}, fmt.Errorf("next message: %w", err)
	}
	return rawOf(m, true)
}

// NextWithin waits at most wait for the next message; ok is false when
// none came in time.
func (t *Tail) NextWithin(wait time.Duration) (m RawMsg, ok bool, err error) {
	msg, err := t.it.Next(jetstream.NextMaxWait(wait))
	if errors.Is(err, nats.ErrTimeout) {
		return RawMsg{}, false, nil
	}
	if err != nil {
		return RawMsg{}, false, fmt.Errorf("next message: %w", err)
	}
	m, err = rawOf(msg, true)
	return m, err == nil, err
}

// Stop ends the read; Next then fails.
func (t *Tail) Stop() { t.it.Stop() }

func rawOf(m jetstream.Msg, pending bool) (RawMsg, error) {
	meta, err := m.Metadata()
	if err != nil {
		return RawMsg{}, fmt.Errorf("message metadata: %w", err)
	}
	r := RawMsg{StreamSeq: meta.Sequence.Stream, Subject: m.Subject(), Data: m.Data(), Time: meta.Timestamp}
	if pending {
		r.Pending = meta.NumPending
	}
	return r, nil
}

// ReadRaw calls fn for every message of the event stream from sequence 1
// through through, in stream order, and returns once fn had the last, fn
// failed (its error), ctx ended or the read broke off. A message missing
// from the stream is ErrGap. fn runs on one goroutine at a time; while it
// blocks, the read waits. It reads through one ordered consumer with
// callbacks, which costs about a fifth less CPU per message than the
// iterator of Subscribe or Tail: rebuild reads the whole stream.
func (s *Store) ReadRaw(ctx context.Context, through uint64, fn func(RawMsg) error) error {
	if through == 0 {
		return nil
	}
	cons, err := s.stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		return fmt.Errorf("read: consumer: %w", err)
	}
	var (
		// The callback runs on one goroutine at a time but for a moment
		// when the ordered consumer replaces its subscription.
		mu     sync.Mutex
		order  = sequencer{want: 1}
		ready  []RawMsg
		failed = make(chan error, 1)
		done   = make(chan struct{})
	)
	stop := func(err error) { // under mu
		order.want = through + 1 // take no more
		if err != nil {
			failed <- err
		} else {
			close(done)
		}
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		mu.Lock()
		defer mu.Unlock()
		if order.want > through {
			return
		}
		r, err := rawOf(m, false)
		if err == nil {
			ready, err = order.add(r, ready[:0])
		}
		if err != nil {
			stop(fmt.Errorf("read: %w", err))
			return
		}
		for _, r := range ready {
			if r.StreamSeq > through {
				break
			}
			if err := fn(r); err != nil {
				stop(err)
				return
			}
			if r.StreamSeq == through {
				stop(nil)
				return
			}
		}
	}, jetstream.PullMaxMessages(4096), jetstream.StopAfter(int(through)))
	if err != nil {
		return fmt.Errorf("read: consume: %w", err)
	}
	defer cc.Stop()
	defer func() {
		// A callback still running finishes, and no later one calls fn.
		mu.Lock()
		order.want = through + 1
		mu.Unlock()
	}()
	select {
	case <-done:
		return nil
	case err := <-failed:
		return err
	case <-cc.Closed():
		// Stopped: after the last message (its callback may still be
		// running: wait for it), or early (the connection closed).
		mu.Lock()
		defer mu.Unlock()
		select {
		case <-done:
			return nil
		case err := <-failed:
			return err
		default:
			return fmt.Errorf("read: the consumer stopped before stream sequence %d", through)
		}
	case <-ctx.Done():
		return ctx.Err()
	}
}

// sequencer puts the ordered consumer's messages back in stream order.
// They come in order, but when the consumer replaces its subscription
// (after a missed heartbeat, a reconnect) the old subscription's last
// callback can run just after the new one's first: a message may come one
// place late. Any other disorder is a gap in the stream.
type sequencer struct {
	want  uint64  // the next stream sequence to hand on
	early *RawMsg // the one message that came before want, if any
}

// add takes r and appends to out the messages now in order.
func (s *sequencer) add(r RawMsg, out []RawMsg) ([]RawMsg, error) {
	switch {
	case r.StreamSeq < s.want:
		return out, nil // handed on already
	case r.StreamSeq == s.want:
		out = append(out, r)
		s.want++
		if s.early != nil && s.early.StreamSeq == s.want {
			out = append(out, *s.early)
			s.want, s.early = s.want+1, nil
		}
		return out, nil
	case r.StreamSeq == s.want+1 && s.early == nil:
		s.early = &r
		return out, nil
	}
	return out, fmt.Errorf("%w: expected stream seq %d, got %d", ErrGap, s.want, r.StreamSeq)
}
