package events

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/turnstile-dev/turnstile/fsm"
)

// HistoryAfter calls fn for the events of workspace id after its event
// seq after, oldest first, up to the newest at the time of the call, as
// History does; but first for the newest readable event whose seq is at
// most after, if there is one: the state the next event starts from. It
// stops after n events past after (n <= 0: no bound). With after 0 and n
// 0 it is History.
//
// It does not read the history from its start: a binary search over
// stream sequences (seek) finds that event with a few direct gets, and the
// read goes on from there, each request asking for no more than the
// events still wanted. So a page of a long history costs about the page,
// not the history before it nor a batch past it.
func (s *Store) HistoryAfter(ctx context.Context, id string, after uint64, n int, fn func(Envelope) error) error {
	if err := fsm.ValidateID(id); err != nil {
		return err
	}
	subject := s.names.Event(id)
	head, err := s.stream.GetLastMsgForSubject(ctx, subject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("history of %s: %w", id, err)
	}
	from, err := s.startAfter(ctx, subject, head, after)
	if err != nil {
		return fmt.Errorf("history of %s after event %d: %w", id, after, err)
	}
	// The read starts at the newest event at most after (or earlier, when
	// seek gave up): hold the newest such event until one after it comes.
	var held *Envelope
	fed, last := 0, uint64(0) // events past after given to fn; the seq of the last event read
	size := func() int {
		if n <= 0 {
			return historyPage
		}
		// The events up to after still to come (seqs run 1, 2, 3, ...):
		// after less the last read; before the first, the one seek found,
		// or all of them from the start. An unreadable message among them
		// only leaves the next request to ask for the rest.
		var ahead uint64
		switch {
		case last > 0:
			ahead = after - min(last, after)
		case from > 1:
			ahead = 1
		default:
			ahead = after
		}
		return int(min(uint64(n-fed)+ahead, historyPage))
	}
	err = s.scanFrom(ctx, id, from, head.Sequence, size, func(r Record) error {
		if r.Event == nil {
			return nil
		}
		last = r.Event.Seq
		switch {
		case r.Event.Seq <= after:
			held = r.Event
			return nil
		case held != nil:
			prev := *held
			held = nil
			if err := fn(prev); err != nil {
				return err
			}
		}
		if err := fn(*r.Event); err != nil {
			return err
		}
		if fed++; fed == n {
			return errEnough
		}
		return nil
	})
	if errors.Is(err, errEnough) {
		return nil
	}
	if err == nil && held != nil {
		err = fn(*held)
	}
	return err
}

// HistoryStart returns the stream sequence a read of workspace id's
// events after its event seq after starts at, as HistoryAfter's does: its
// newest readable event whose seq is at most after, found by a binary
// search (seek); 1 when there is none (or no workspace). A follower of the
// workspace's events resumes there, and takes the state the next event
// starts from on the way.
func (s *Store) HistoryStart(ctx context.Context, id string, after uint64) (uint64, error) {
	if err := fsm.ValidateID(id); err != nil {
		return 0, err
	}
	subject := s.names.Event(id)
	head, err := s.stream.GetLastMsgForSubject(ctx, subject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 1, nil
	}
	if err != nil {
		return 0, fmt.Errorf("start of %s after event %d: %w", id, after, err)
	}
	from, err := s.startAfter(ctx, subject, head, after)
	if err != nil {
		return 0, fmt.Errorf("start of %s after event %d: %w", id, after, err)
	}
	return from, nil
}

// startAfter is HistoryStart for a workspace whose newest message is head.
func (s *Store) startAfter(ctx context.Context, subject string, head *jetstream.RawStreamMsg, after uint64) (uint64, error) {
	if after == 0 {
		return 1, nil
	}
	if env, err := s.DecodeEvent(head.Subject, head.Data); err == nil && env.Seq <= after {
		return head.Sequence, nil // nothing after: the newest is the state
	}
	return s.seek(ctx, subject, after, head.Sequence)
}

// seek returns the stream sequence of the newest readable event on
// subject, up to stream sequence last, whose seq is at most after; 1 when
// there is none, or when it gives up. It relies on a workspace's event
// seq growing with its stream sequence, as the engine appends them (each
// after the workspace's newest, Nats-Expected-Last-Subject-Sequence; only
// serve may publish on event subjects): "the first readable event at or
// after stream sequence s has a seq above after, or there is none" is
// then false up to the event sought and true past it, and a binary search
// finds where it turns, one probe (firstEventAt) a step: about log2(last)
// direct gets. An unreadable message is stepped over to the next; past a
// run of maxStepsOver of them seek gives up and the whole history is read,
// as before it. A probe that finds too little (a follower's direct get
// behind the leader) only moves the start earlier, which costs reads, not
// events: HistoryAfter sorts what it reads by seq.
func (s *Store) seek(ctx context.Context, subject string, after, last uint64) (uint64, error) {
	// The turn is in [lo, hi]: false below lo, true at hi.
	lo, hi, found := uint64(1), last+1, uint64(1)
	for lo < hi {
		mid := lo + (hi-lo)/2
		env, ok, err := s.firstEventAt(ctx, subject, mid, last)
		if err != nil {
			return 0, err
		}
		if !ok {
			return 1, nil
		}
		if env == nil || env.Seq > after {
			hi = mid
			continue
		}
		// False through the event found, which is the newest so far.
		found, lo = env.StreamSeq, env.StreamSeq+1
	}
	return found, nil
}

// firstEventAt returns the first readable event on subject at or after
// stream sequence seq and up to last, nil if there is none; ok is false
// when more than maxStepsOver unreadable messages in a row came first.
func (s *Store) firstEventAt(ctx context.Context, subject string, seq, last uint64) (env *Envelope, ok bool, err error) {
	for range maxStepsOver + 1 {
		if seq > last {
			return nil, true, nil
		}
		m, err := s.directGet(ctx, struct {
			Seq     uint64 `json:"seq"`
			NextFor string `json:"next_by_subj"`
		}{seq, subject})
		if err != nil {
			return nil, false, fmt.Errorf("event at or after stream sequence %d: %w", seq, err)
		}
		if m == nil || m.Sequence > last {
			return nil, true, nil
		}
		if e, err := s.DecodeEvent(m.Subject, m.Data); err == nil {
			e.StreamSeq = m.Sequence
			return &e, true, nil
		}
		seq = m.Sequence + 1
	}
	return nil, false, nil
}

// maxStepsOver bounds how many unreadable messages in a row seek steps
// over, one direct get each, before it reads the whole history instead.
const maxStepsOver = 16
