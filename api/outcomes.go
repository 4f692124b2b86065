package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/fsm"
)

// A workspace's outcomes: what became of every command sent to it,
// including those that recorded no event (refused, no-op, and stale
// reports of an older generation), which its events alone cannot show.
// Outcomes are stored by command id, not by workspace, so a read scans the
// outcomes of every workspace from the workspace's first event on and
// keeps its own: a debugging read, not a hot path.

// Outcome is one command's outcome, as GET .../outcomes answers it.
type Outcome struct {
	CommandResult
	// StreamSeq is the outcome's place in the event stream: the cursor of
	// after= and the id: of a follow stream.
	StreamSeq uint64 `json:"stream_seq"`
	Actor     string `json:"actor,omitempty"`
	// CommandGeneration is the generation a system report was about; one
	// below the workspace's is what makes a report stale.
	CommandGeneration uint64    `json:"command_generation,omitempty"`
	ReceivedAt        time.Time `json:"received_at"`
	DecidedAt         time.Time `json:"decided_at"`
	Cause             Cause     `json:"cause"`
}

// OutcomeOf describes o, read at stream sequence seq.
func OutcomeOf(o events.OutcomeRecord, seq uint64) Outcome {
	c := Cause{Kind: "user", Command: o.CommandType, Actor: o.Actor}
	switch {
	case o.CommandType == fsm.DeadlineExceeded:
		c.Kind = "deadline"
	case o.CommandType.IsSystem():
		c.Kind = "system"
	}
	return Outcome{CommandResult: ResultOf(o), StreamSeq: seq, Actor: o.Actor, CommandGeneration: o.CommandGeneration,
		ReceivedAt: o.ReceivedAt, DecidedAt: o.DecidedAt, Cause: c}
}

// OutcomePage is a page of a workspace's outcomes.
type OutcomePage struct {
	Workspace string    `json:"workspace"`
	Outcomes  []Outcome `json:"outcomes"`
	// NextAfter, when set, is the cursor of the next page: pass it as
	// after=. Absent, there is nothing more now.
	NextAfter *uint64 `json:"next_after,omitempty"`
}

// errPageDone ends a page's read.
var errPageDone = errors.New("page done")

func (s *Server) outcomes(w http.ResponseWriter, r *http.Request) {
	id, ok := s.pathID(w, r)
	if !ok {
		return
	}
	p, err := parsePosition(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	first, ok, err := s.cfg.Store.FirstEventSeq(r.Context(), id)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if !ok {
		writeNotFound(w, id)
		return
	}
	from := max(p.after+1, first)
	store := s.cfg.Store
	if p.follow {
		s.follow(w, r, p.after, func(ctx context.Context, out chan<- sseItem) error {
			return readOutcomes(ctx, store, id, from, true, func(o Outcome) error {
				return send(ctx, out, sseItem{id: o.StreamSeq, ev: o})
			}, nil)
		})
		return
	}
	if p.limit == 0 {
		p.limit = DefaultPageLimit
	}
	page := OutcomePage{Workspace: id, Outcomes: []Outcome{}}
	scanned := 0
	err = readOutcomes(r.Context(), store, id, from, false, func(o Outcome) error {
		if len(page.Outcomes) == p.limit {
			next := page.Outcomes[len(page.Outcomes)-1].StreamSeq
			page.NextAfter = &next
			return errPageDone
		}
		page.Outcomes = append(page.Outcomes, o)
		return nil
	}, func(seq uint64) error {
		// The read's cost is what it scans, not what it keeps: stop at
		// the budget and let the cursor carry on from here.
		if scanned++; scanned >= s.cfg.MaxOutcomeScan {
			page.NextAfter = &seq
			return errPageDone
		}
		return nil
	})
	if err != nil && !errors.Is(err, errPageDone) {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, page)
}

// readOutcomes calls fn for each readable outcome of workspace id from
// stream sequence from on: with follow, including those stored later,
// until ctx ends or fn fails; without, up to the newest one at the time of
// the call. Without follow, scanned (if set) is called with the stream
// sequence of each outcome read, of any workspace, but the last; its
// error ends the read as fn's does.
func readOutcomes(ctx context.Context, store *events.Store, id string, from uint64, follow bool,
	fn func(Outcome) error, scanned func(seq uint64) error,
) error {
	var prev uint64 // the record read before this one; 0: none yet
	err := store.Outcomes(ctx, from, follow, func(r events.Record) error {
		if prev != 0 && scanned != nil && !follow {
			// Called for the one before: so never for the last.
			if err := scanned(prev); err != nil {
				return err
			}
		}
		prev = r.StreamSeq
		if r.Outcome == nil || r.Outcome.Workspace != id {
			return nil
		}
		return fn(OutcomeOf(*r.Outcome, r.StreamSeq))
	})
	if err != nil && ctx.Err() == nil && !errors.Is(err, errPageDone) {
		return fmt.Errorf("outcomes of %s: %w", id, err)
	}
	return err
}
