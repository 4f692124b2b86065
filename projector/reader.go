package projector

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/turnstile-dev/turnstile/events"
)

// decodeJob is a run of messages to decode and where the result goes.
type decodeJob struct {
	msgs []events.RawMsg
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
func (l *loader) decodeRun(msgs []events.RawMsg) decodedRun {
	dec := l.p.dec
	d := decodedRun{events: reuse(l.freeEvents, len(msgs)), outcomes: reuse(l.freeCommands, len(msgs)),
		isEvent: make([]bool, 0, len(msgs)), n: len(msgs)}
	for _, r := range msgs {
		d.last = r.Time
		switch {
		case dec.names.IsEvent(r.Subject):
			f, err := dec.event(r.StreamSeq, r.Subject, r.Data)
			if err != nil {
				d.dead = append(d.dead, deadLetterOf(&events.Unreadable{StreamSeq: r.StreamSeq, Subject: r.Subject, Time: r.Time, Data: r.Data, Err: err}))
				continue
			}
			d.events, d.isEvent = append(d.events, f), append(d.isEvent, true)
		case dec.isOutcome(r.Subject):
			c, err := dec.outcome(r.StreamSeq, r.Subject, r.Data)
			if err != nil {
				d.dead = append(d.dead, deadLetterOf(&events.Unreadable{StreamSeq: r.StreamSeq, Subject: r.Subject, Time: r.Time, Data: r.Data, Err: err}))
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
func (l *loader) read(ctx context.Context, evs chan<- []eventFacts, cmds chan<- []commandRow) error {
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
		fetchErr <- l.fetch(ctx, run, func(msgs []events.RawMsg) bool {
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
			if err := checkFollows(ctx, l.p.cfg.Store, prev, f); err != nil {
				return fmt.Errorf("rebuild: %w", err)
			}
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
// stops early when hand returns false. Sequences the stream no longer
// holds are passed and counted in l.skipped; checkFollows, in the fold,
// tells whether events were among them.
func (l *loader) fetch(ctx context.Context, n int, hand func([]events.RawMsg) bool) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	runs := make(chan []events.RawMsg, 2)
	read := make(chan error, 1)
	go func() {
		defer close(runs)
		buf := make([]events.RawMsg, 0, n)
		send := func() error {
			select {
			case runs <- buf:
			case <-ctx.Done():
				return ctx.Err()
			}
			buf = make([]events.RawMsg, 0, n)
			return nil
		}
		next := uint64(1)
		err := l.p.cfg.Store.ReadRaw(ctx, l.through, func(r events.RawMsg) error {
			l.skipped += r.StreamSeq - next
			next = r.StreamSeq + 1
			if buf = append(buf, r); len(buf) == n {
				return send()
			}
			return nil
		})
		if err == nil && len(buf) > 0 {
			err = send()
		}
		l.skipped += (l.through + 1) - min(next, l.through+1) // the end expired
		read <- err
	}()
	for r := range runs {
		if !hand(r) {
			cancel()
			for range runs { // the reader stops at cancel
			}
			if err := <-read; err != nil && !errors.Is(err, context.Canceled) {
				return fmt.Errorf("rebuild: %w", err)
			}
			return ctx.Err()
		}
	}
	if err := <-read; err != nil {
		return fmt.Errorf("rebuild: %w", err)
	}
	return nil
}
