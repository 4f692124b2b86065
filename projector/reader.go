package projector

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/turnstile-dev/turnstile/events"
)

// raw is an undecoded stream message.
type raw struct {
	seq     uint64
	subject string
	data    []byte
	time    time.Time
}

// decodeJob is a run of messages to decode and where the result goes.
type decodeJob struct {
	msgs []raw
	res  chan decodedRun
}

// decodedRun is a run of messages decoded: its events and its outcomes,
// each in stream order, and how the two interleave. foldRun completes the
// rows in place.
type decodedRun struct {
	events   []eventFacts
	outcomes []commandRow
	isEvent  []bool // per event or outcome, in stream order
	dead     []deadLetterRow
	n        int       // messages, of any subject
	last     time.Time // stream time of the last
	err      error
}

// decodeRun decodes a run of messages.
func (l *loader) decodeRun(msgs []raw) decodedRun {
	dec := l.p.dec
	d := decodedRun{events: reuse(l.freeEvents, len(msgs)), outcomes: reuse(l.freeCommands, len(msgs)),
		isEvent: make([]bool, 0, len(msgs)), n: len(msgs)}
	for _, r := range msgs {
		d.last = r.time
		switch {
		case dec.names.IsEvent(r.subject):
			f, err := dec.event(r.seq, r.subject, r.data)
			if err != nil {
				d.dead = append(d.dead, deadLetterOf(&events.Unreadable{StreamSeq: r.seq, Subject: r.subject, Time: r.time, Data: r.data, Err: err}))
				continue
			}
			d.events, d.isEvent = append(d.events, f), append(d.isEvent, true)
		case dec.isOutcome(r.subject):
			c, err := dec.outcome(r.seq, r.subject, r.data)
			if err != nil {
				d.dead = append(d.dead, deadLetterOf(&events.Unreadable{StreamSeq: r.seq, Subject: r.subject, Time: r.time, Data: r.data, Err: err}))
				continue
			}
			d.outcomes, d.isEvent = append(d.outcomes, c), append(d.isEvent, false)
		}
	}
	return d
}

// reuse takes a slice of capacity n from free, or makes one.
func reuse[R any](free chan []R, n int) []R {
	select {
	case s := <-free:
		if cap(s) >= n {
			return s
		}
	default:
	}
	return make([]R, 0, n)
}

// read fetches messages 1..through in runs, decodes the runs on two
// goroutines and folds them in stream order, handing each run's rows to
// evs and cmds.
func (l *loader) read(ctx context.Context, stream jetstream.Stream, evs chan<- []eventFacts, cmds chan<- []commandRow) error {
	if l.through == 0 {
		return nil
	}
	const run = 1000
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	jobs := make(chan decodeJob)
	order := make(chan chan decodedRun, 8) // results in stream order
	fetchErr := make(chan error, 1)
	go func() {
		defer close(order)
		defer close(jobs)
		fetchErr <- l.fetch(ctx, stream, run, func(msgs []raw) bool {
			res := make(chan decodedRun, 1)
			select {
			case order <- res:
			case <-ctx.Done():
				return false
			}
			select {
			case jobs <- decodeJob{msgs, res}:
				return true
			case <-ctx.Done():
				res <- decodedRun{err: ctx.Err()} // the folder waits for every result
				return false
			}
		})
	}()
	var workers sync.WaitGroup
	for range 2 {
		workers.Go(func() {
			for j := range jobs {
				j.res <- l.decodeRun(j.msgs)
			}
		})
	}
	var err error
	read := 0
	for res := range order {
		d := <-res
		if err == nil && d.err != nil {
			err = d.err
			cancel()
		}
		if err != nil {
			continue // drain: the fetcher stops at cancel
		}
		if err = l.foldRun(ctx, &d, evs, cmds); err != nil {
			cancel()
			continue
		}
		if read/10000 != (read+d.n)/10000 {
			l.progress(Progress{Phase: "read", Done: uint64(read + d.n), Total: l.through})
		}
		read += d.n
	}
	if ferr := <-fetchErr; err == nil {
		err = ferr
	}
	workers.Wait()
	return err
}

// foldRun folds a run of messages in stream order, completing its rows in
// place, and hands them on.
func (l *loader) foldRun(ctx context.Context, d *decodedRun, evs chan<- []eventFacts, cmds chan<- []commandRow) error {
	if d.n > 0 {
		l.lastTime = d.last
	}
	l.dead = append(l.dead, d.dead...)
	ev := 0
	for i, isEvent := range d.isEvent {
		if isEvent {
			f := &d.events[ev]
			ev++
			prev := l.ws[f.row.Workspace]
			w, e := fold(prev, f)
			w = w.owned()
			if prev != nil {
				*prev = w
			} else {
				l.ws[w.ID] = &w
			}
			f.row = e
			continue
		}
		// A later outcome of the same command is copied too, and deleted
		// when the indexes are built (buildIndexes).
		c := &d.outcomes[i-ev]
		*c = resolveEvent(l.ws[c.Workspace], *c)
		if c.EventSeq != nil && c.EventStreamSeq == nil {
			l.unresolved++
		}
	}
	if len(d.events) > 0 {
		select {
		case evs <- d.events:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if len(d.outcomes) > 0 {
		select {
		case cmds <- d.outcomes:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// fetch reads messages 1..through and hands them on in runs of n; it
// stops early when hand returns false. The messages come to a callback,
// which costs about a fifth less CPU per message than an iterator's Next.
func (l *loader) fetch(ctx context.Context, stream jetstream.Stream, n int, hand func([]raw) bool) error {
	cons, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		return fmt.Errorf("rebuild: consumer: %w", err)
	}
	runs := make(chan []raw, 2)
	failed := make(chan error, 1)
	var (
		// The callback runs on one goroutine at a time but for a moment
		// when the ordered consumer replaces its subscription.
		mu    sync.Mutex
		buf   = make([]raw, 0, n)
		order = sequencer{want: 1}
		ready []raw
	)
	cc, err := cons.Consume(func(m jetstream.Msg) {
		mu.Lock()
		defer mu.Unlock()
		if order.want > l.through {
			return
		}
		meta, err := m.Metadata()
		if err == nil {
			ready, err = order.add(raw{seq: meta.Sequence.Stream, subject: m.Subject(), data: m.Data(), time: meta.Timestamp}, ready[:0])
		}
		if err != nil {
			order.want = l.through + 1 // take no more
			failed <- fmt.Errorf("rebuild: read: %w", err)
			return
		}
		for _, r := range ready {
			if r.seq > l.through {
				break
			}
			buf = append(buf, r)
			if len(buf) == n || r.seq == l.through {
				select {
				case runs <- buf:
				case <-ctx.Done():
				}
				buf = make([]raw, 0, n)
			}
		}
	}, jetstream.PullMaxMessages(4096), jetstream.StopAfter(int(l.through)))
	if err != nil {
		return fmt.Errorf("rebuild: consume: %w", err)
	}
	defer cc.Stop()
	closed := cc.Closed()
	for got := uint64(0); got < l.through; {
		select {
		case r := <-runs:
			if !hand(r) {
				return ctx.Err()
			}
			got += uint64(len(r))
		case err := <-failed:
			return err
		case <-closed:
			// Stopped: after the last message, whose run is queued by
			// now, or early (the connection closed).
			for got < l.through {
				select {
				case r := <-runs:
					if !hand(r) {
						return ctx.Err()
					}
					got += uint64(len(r))
				default:
					return fmt.Errorf("rebuild: read: the consumer stopped after %d of %d messages", got, l.through)
				}
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// sequencer puts the ordered consumer's messages back in stream order.
// They come in order, but when the consumer replaces its subscription
// (after a missed heartbeat, a reconnect) the old subscription's last
// callback can run just after the new one's first: a message may come one
// place late. Any other disorder is a gap in the stream.
type sequencer struct {
	want  uint64 // the next stream sequence to hand on
	early *raw   // the one message that came before want, if any
}

// add takes r and appends to out the messages now in order.
func (s *sequencer) add(r raw, out []raw) ([]raw, error) {
	switch {
	case r.seq < s.want:
		return out, nil // handed on already
	case r.seq == s.want:
		out = append(out, r)
		s.want++
		if s.early != nil && s.early.seq == s.want {
			out = append(out, *s.early)
			s.want, s.early = s.want+1, nil
		}
		return out, nil
	case r.seq == s.want+1 && s.early == nil:
		s.early = &r
		return out, nil
	}
	return out, fmt.Errorf("%w: expected stream seq %d, got %d", ErrGap, s.want, r.seq)
}
