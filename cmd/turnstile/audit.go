package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/turnstile-dev/turnstile/audit"
	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/fsm"
)

// auditReport is audit's -o json output.
type auditReport struct {
	Workspace  string            `json:"workspace,omitempty"`
	Workspaces int               `json:"workspaces,omitempty"`
	Events     int               `json:"events"`
	Through    uint64            `json:"through_stream_seq,omitempty"`
	OK         bool              `json:"ok"`
	Violations []audit.Violation `json:"violations"`
	// State is the replayed state after the last event (one workspace).
	State *fsm.Workspace `json:"state,omitempty"`
	// At is the replayed state at --at; nil before the first event.
	At      *fsm.Workspace `json:"at,omitempty"`
	AtLabel string         `json:"at_label,omitempty"`
}

func (a *app) auditCmd() *cobra.Command {
	var all bool
	var at string
	c := &cobra.Command{
		Use:   "audit [ID | --all]",
		Short: "Replay histories through the lifecycle and prove every transition legal (exit 1 on a violation)",
		Long: `Replay a workspace's events from the stream through the lifecycle: every transition
must be legal from the state before it, and every state stored with an event must
equal the replayed one. --at shows the state at a time (RFC 3339) or at an event
sequence; --all checks every workspace in one pass over the stream.`,
		Example: "  turnstile audit demo\n  turnstile audit demo --at 3\n  turnstile audit demo --at 2026-01-02T15:04:05Z\n  turnstile audit --all",
		Args: func(_ *cobra.Command, args []string) error {
			switch {
			case all && len(args) > 0:
				return usageError(errors.New("give a workspace ID or --all, not both"))
			case !all && len(args) != 1:
				return usageError(errors.New("give a workspace ID, or --all"))
			case all && at != "":
				return usageError(errors.New("--at needs a workspace ID"))
			}
			// Check the input before connecting: bad input is a usage
			// error whether or not a server is there.
			if !all {
				if err := fsm.ValidateID(args[0]); err != nil {
					return usageError(err)
				}
			}
			if at != "" {
				if _, err := parseAt(at); err != nil {
					return usageError(err)
				}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			store, _, closeStore, err := a.openStoreWithin(ctx, 10*time.Second)
			if err != nil {
				return err
			}
			defer closeStore()
			if all {
				return a.auditAll(ctx, store)
			}
			return a.auditOne(ctx, store, args[0], at)
		},
	}
	c.Flags().BoolVar(&all, "all", false, "audit every workspace, with a progress bar and a summary")
	c.Flags().StringVar(&at, "at", "", "show the state at this event sequence (a number) or time (RFC 3339)")
	return c
}

// openStoreWithin connects with a deadline on connecting only, so a long
// audit is not cut short.
func (a *app) openStoreWithin(ctx context.Context, d time.Duration) (*events.Store, *nats.Conn, func(), error) {
	cctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	return a.openStore(cctx)
}

// auditPoint selects events up to a sequence or a time.
type auditPoint struct {
	seq  uint64
	time time.Time
}

func parseAt(s string) (auditPoint, error) {
	if n, err := strconv.ParseUint(s, 10, 64); err == nil {
		return auditPoint{seq: n}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return auditPoint{}, fmt.Errorf("--at %q: give an event sequence (a number) or an RFC 3339 time such as 2026-01-02T15:04:05Z", s)
	}
	return auditPoint{time: t}, nil
}

func (p auditPoint) includes(env events.Envelope) bool {
	if p.seq > 0 {
		return env.Seq <= p.seq
	}
	return !env.Time.After(p.time)
}

// auditOne audits one workspace; Args has checked id and at.
func (a *app) auditOne(ctx context.Context, store *events.Store, id, at string) error {
	var point *auditPoint
	if at != "" {
		p, err := parseAt(at)
		if err != nil {
			return usageError(err)
		}
		point = &p
	}
	r := audit.NewReplayer(id)
	rep := auditReport{Workspace: id, Violations: []audit.Violation{}}
	var atEnv *events.Envelope
	err := store.HistoryRecords(ctx, id, func(rec events.Record) error {
		if rec.Unreadable != nil {
			rep.Violations = append(rep.Violations, unreadableFinding(store.Names(), rec.Unreadable))
			return nil
		}
		env := *rec.Event
		r.Step(env)
		rep.Events++
		if point != nil && point.includes(env) {
			s := r.State
			rep.At = &s
			e := env
			atEnv = &e
		}
		return nil
	})
	if err != nil {
		return err
	}
	if rep.Events == 0 && len(rep.Violations) == 0 {
		return withCode(exitRejected, fmt.Errorf("workspace %s has no history (not_found)", id))
	}
	rep.Violations = append(rep.Violations, r.Violations...)
	sortViolations(rep.Violations)
	rep.OK = len(rep.Violations) == 0
	state := r.State
	rep.State = &state
	if point != nil {
		rep.AtLabel = "before the first event: the workspace did not exist yet"
		if atEnv != nil {
			rep.AtLabel = fmt.Sprintf("event %d (stream seq %d) at %s", atEnv.Seq, atEnv.StreamSeq, atEnv.Time.Format(time.RFC3339Nano))
		}
	}
	if a.structured() {
		if err := a.print(rep); err != nil {
			return err
		}
	} else {
		a.printAudit(rep)
	}
	if !rep.OK {
		return &codedError{code: exitError, err: fmt.Errorf("audit of %s found %d violation(s)", id, len(rep.Violations))}
	}
	return nil
}

func (a *app) printAudit(rep auditReport) {
	if rep.OK {
		fmt.Fprintf(a.out, "audit %s: OK: %d event(s) replayed through the lifecycle; every transition legal, every stored state matches the replay\n",
			rep.Workspace, rep.Events)
	} else {
		fmt.Fprintf(a.out, "audit %s: FAILED: %d violation(s) in %d event(s)\n", rep.Workspace, len(rep.Violations), rep.Events)
		for _, v := range rep.Violations {
			fmt.Fprintf(a.out, "  %s\n", v)
		}
	}
	if s := rep.State; s != nil {
		fmt.Fprintf(a.out, "now: %s\n", describeState(*s))
	}
	if rep.AtLabel != "" {
		if rep.At == nil {
			fmt.Fprintf(a.out, "at %s\n", rep.AtLabel)
		} else {
			fmt.Fprintf(a.out, "at %s: %s\n", rep.AtLabel, describeState(*rep.At))
		}
	}
}

func describeState(w fsm.Workspace) string {
	s := fmt.Sprintf("%s at generation %d, spec version %d (%s), after event %d", w.Status, w.Generation, w.SpecVersion, describeSpec(w.Spec), w.Seq)
	if w.LastError != "" {
		s += "; last error: " + w.LastError
	}
	return s
}

func (a *app) auditAll(ctx context.Context, store *events.Store) error {
	last, err := store.LastSeq(ctx)
	if err != nil {
		return err
	}
	var bar *progressbar.ProgressBar
	if a.isTerminal(a.err) && last > 0 {
		bar = newBar(a.err, "audit", int64(last))
	}
	replayers := map[string]*audit.Replayer{}
	rep := auditReport{Violations: []audit.Violation{}, Through: last}
	err = store.Replay(ctx, 1, last, func(rec events.Record) error {
		if bar != nil && rec.StreamSeq%256 == 0 {
			_ = bar.Set64(int64(rec.StreamSeq))
		}
		if rec.Unreadable != nil {
			rep.Violations = append(rep.Violations, unreadableFinding(store.Names(), rec.Unreadable))
			return nil
		}
		env := rec.Event
		if env == nil {
			return nil
		}
		r := replayers[env.Workspace]
		if r == nil {
			r = audit.NewReplayer(env.Workspace)
			replayers[env.Workspace] = r
		}
		r.Step(*env)
		rep.Events++
		return nil
	})
	if bar != nil {
		_ = bar.Finish()
	}
	if err != nil {
		return err
	}
	for _, r := range replayers {
		rep.Violations = append(rep.Violations, r.Violations...)
	}
	sortViolations(rep.Violations)
	rep.Workspaces = len(replayers)
	rep.OK = len(rep.Violations) == 0
	if a.structured() {
		if err := a.print(rep); err != nil {
			return err
		}
	} else if rep.OK {
		fmt.Fprintf(a.out, "audit --all: OK: %d workspace(s), %d event(s) through stream seq %d; every transition legal, every stored state matches the replay\n",
			rep.Workspaces, rep.Events, rep.Through)
	} else {
		fmt.Fprintf(a.out, "audit --all: FAILED: %d violation(s) in %d workspace(s), %d event(s) through stream seq %d\n",
			len(rep.Violations), rep.Workspaces, rep.Events, rep.Through)
		for _, v := range rep.Violations {
			fmt.Fprintf(a.out, "  %s\n", v)
		}
	}
	if !rep.OK {
		return &codedError{code: exitError, err: fmt.Errorf("audit found %d violation(s)", len(rep.Violations))}
	}
	return nil
}

// unreadableFinding reports a message no reader can use: every reader
// skips it, so it changed nothing, but the engine never writes one, so it
// is corruption or a forgery, and the audit fails on it.
func unreadableFinding(n events.Names, u *events.Unreadable) audit.Violation {
	v := audit.Violation{StreamSeq: u.StreamSeq, Problem: fmt.Sprintf("unreadable message on %s (%s, %d bytes), skipped by every reader: %v",
		u.Subject, events.ReasonOf(u), len(u.Data), u.Err)}
	if n.IsEvent(u.Subject) {
		v.Workspace = n.WorkspaceOf(u.Subject)
	}
	return v
}

func sortViolations(vs []audit.Violation) {
	slices.SortFunc(vs, func(x, y audit.Violation) int { return cmp.Compare(x.StreamSeq, y.StreamSeq) })
}
