package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/turnstile-dev/turnstile/api"
	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/fsm"
)

// auditReport is audit's -o json output: the report serve's API returns.
type auditReport = api.AuditReport

func (a *app) auditCmd() *cobra.Command {
	var all bool
	var at string
	c := &cobra.Command{
		Use:   "audit [ID | --all]",
		Short: "Replay histories through the lifecycle and prove every transition legal (exit 1 on a violation)",
		Long: `Replay a workspace's events from the stream through the lifecycle: every transition
must be legal from the state before it, and every state stored with an event must
equal the replayed one. --at shows the state at a time (RFC 3339) or at an event
sequence; --all checks every workspace in one pass over the stream, with a progress
bar on a terminal. Over the HTTP API serve runs the replay (and streams its
progress) and the CLI prints its report.`,
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
			id := ""
			if !all {
				id = args[0]
			}
			rep, err := a.audit(ctx, id, at)
			if errors.Is(err, api.ErrNoWorkspace) {
				return withCode(exitRejected, fmt.Errorf("workspace %s has no history (not_found)", id))
			}
			if err != nil {
				return err
			}
			if all {
				return a.reportAuditAll(rep)
			}
			return a.reportAudit(rep)
		},
	}
	c.Flags().BoolVar(&all, "all", false, "audit every workspace, with a summary (and a progress bar on a terminal)")
	c.Flags().StringVar(&at, "at", "", "show the state at this event sequence (a number) or time (RFC 3339)")
	return c
}

// audit runs the audit of id (of every workspace when id is "") in
// serve when the CLI speaks HTTP, else here over NATS: the same code
// either way (api.Audit, api.AuditAll). Args has checked id and at.
func (a *app) audit(ctx context.Context, id, at string) (auditReport, error) {
	hc, viaAPI, err := a.apiClient()
	if err != nil {
		return auditReport{}, err
	}
	// The bar, on a terminal only, is the same whichever path runs the
	// replay: over HTTP serve streams its progress.
	var progress func(seq, last uint64)
	if id == "" && a.isTerminal(a.err) {
		var finish func()
		progress, finish = auditBar(a.err)
		defer finish()
	}
	if viaAPI {
		if id == "" {
			return hc.AuditAllProgress(ctx, progress)
		}
		return hc.Audit(ctx, id, at)
	}
	store, _, closeStore, err := a.openStoreWithin(ctx, 10*time.Second)
	if err != nil {
		return auditReport{}, err
	}
	defer closeStore()
	if id == "" {
		return api.AuditAll(ctx, store, progress)
	}
	var point *api.AuditPoint
	if at != "" {
		p, err := parseAt(at)
		if err != nil {
			return auditReport{}, usageError(err)
		}
		point = &p
	}
	return api.Audit(ctx, store, id, point)
}

// auditBar returns an audit --all progress callback that draws a bar on w
// (a terminal) from the first call that knows the total, and finish,
// which clears it.
func auditBar(w io.Writer) (progress func(seq, last uint64), finish func()) {
	var bar *progressbar.ProgressBar
	progress = func(seq, last uint64) {
		if bar == nil && last > 0 {
			bar = newBar(w, "audit", int64(last))
		}
		if bar != nil {
			_ = bar.Set64(int64(seq))
		}
	}
	finish = func() {
		if bar != nil {
			_ = bar.Finish()
		}
	}
	return progress, finish
}

// openStoreWithin connects with a deadline on connecting only, so a long
// audit is not cut short.
func (a *app) openStoreWithin(ctx context.Context, d time.Duration) (*events.Store, *nats.Conn, func(), error) {
	cctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	return a.openStore(cctx)
}

func parseAt(s string) (api.AuditPoint, error) {
	p, err := api.ParseAuditPoint(s)
	if err != nil {
		return p, fmt.Errorf("--at %w", err)
	}
	return p, nil
}

// reportAudit prints one workspace's report; exit 1 on a violation.
func (a *app) reportAudit(rep auditReport) error {
	if a.structured() {
		if err := a.print(rep); err != nil {
			return err
		}
	} else {
		a.printAudit(rep)
	}
	if !rep.OK {
		return &codedError{code: exitError, err: fmt.Errorf("audit of %s found %d violation(s)", rep.Workspace, len(rep.Violations))}
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
			fmt.Fprintf(a.out, "  %s\n", printable(fmt.Sprint(v)))
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
	return printable(s) // the spec's values and the last error are free text
}

// reportAuditAll prints the report of every workspace; exit 1 on a
// violation.
func (a *app) reportAuditAll(rep auditReport) error {
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
			fmt.Fprintf(a.out, "  %s\n", printable(fmt.Sprint(v)))
		}
	}
	if !rep.OK {
		return &codedError{code: exitError, err: fmt.Errorf("audit found %d violation(s)", len(rep.Violations))}
	}
	return nil
}
