package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/turnstile-dev/turnstile/api"
	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/read"
)

func (a *app) getCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "get ID",
		Short: "Show a workspace from the read model, and which event it reflects",
		Args:  exactArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			id := args[0]
			if err := fsm.ValidateID(id); err != nil {
				return usageError(err)
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
			defer cancel()
			pool, err := a.openPool(ctx)
			if err != nil {
				return err
			}
			defer pool.Close()
			store, _, closeStore, err := a.openStore(ctx)
			if err != nil {
				return err
			}
			defer closeStore()
			w, err := read.GetWorkspace(ctx, pool, store, id)
			if errors.Is(err, read.ErrNoWorkspace) {
				return withCode(exitRejected, fmt.Errorf("workspace %s does not exist (not_found): create it first", id))
			}
			if err != nil {
				return err
			}
			if a.output == "json" {
				return printJSON(a.out, w)
			}
			t := newTable(a.out)
			t.row("ID", w.ID)
			t.row("STATUS", w.Status)
			t.row("GENERATION", strconv.FormatUint(w.Generation, 10))
			t.row("SPEC", fmt.Sprintf("%s (version %d, attempt runs version %d)", describeSpec(w.Spec), w.SpecVersion, w.AttemptSpecVersion))
			t.row("CONTAINER", orDash(w.ContainerID))
			t.row("LAST ERROR", orDash(w.LastError))
			if w.UpdatedAt != nil {
				t.row("UPDATED", formatTime(*w.UpdatedAt))
			}
			t.row("REFLECTS", reflects(w))
			return t.flush()
		},
	}
}

// reflects says which point of the history a read shows.
func reflects(w api.Workspace) string {
	s := fmt.Sprintf("event %d at generation %d (stream seq %d), from the %s", w.EventSeq, w.Generation, w.StreamSeq,
		map[string]string{read.SourceReadModel: "read model", read.SourceEventStore: "event stream (the read model has not caught up yet)"}[w.Source])
	switch {
	case w.LatestEventSeq > w.EventSeq:
		s += fmt.Sprintf("; the stream already holds event %d: the read model is catching up", w.LatestEventSeq)
	case w.LatestEventSeq == w.EventSeq:
		s += "; up to date with the stream"
	}
	return s
}

func (a *app) listCmd() *cobra.Command {
	var status string
	var limit int
	c := &cobra.Command{
		Use:   "list",
		Short: "List workspaces from the read model",
		Args:  exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if limit < 1 || limit > 1000 {
				return usageError(fmt.Errorf("--limit %d: use 1 to 1000", limit))
			}
			o := read.ListOptions{Limit: limit}
			if status != "" {
				st, ok := fsm.ParseStatus(status)
				if !ok || st == fsm.None {
					return usageError(fmt.Errorf("--status %q: use provisioning, running, stopping, stopped, failed, deleting or deleted", status))
				}
				o.Status = st
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
			defer cancel()
			pool, err := a.openPool(ctx)
			if err != nil {
				return err
			}
			defer pool.Close()
			list, err := read.ListWorkspaces(ctx, pool, o)
			if err != nil {
				return err
			}
			if a.output == "json" {
				return printJSON(a.out, list)
			}
			t := newTable(a.out, "ID", "STATUS", "GEN", "EVENT", "UPDATED", "IMAGE", "LAST ERROR")
			for _, w := range list.Workspaces {
				updated := "-"
				if w.UpdatedAt != nil {
					updated = formatTime(*w.UpdatedAt)
				}
				t.row(w.ID, w.Status, strconv.FormatUint(w.Generation, 10), strconv.FormatUint(w.EventSeq, 10), updated,
					orDash(w.Spec.Image), orDash(w.LastError))
			}
			if err := t.flush(); err != nil {
				return err
			}
			more := ""
			if list.Next != "" {
				more = fmt.Sprintf("; more after %s (raise --limit)", list.Next)
			}
			fmt.Fprintf(a.out, "%d workspace(s) from the read model at stream seq %d; GEN and EVENT are the generation and event each row reflects%s\n",
				len(list.Workspaces), list.Checkpoint, more)
			return nil
		},
	}
	c.Flags().StringVar(&status, "status", "", "only workspaces in this state")
	c.Flags().IntVar(&limit, "limit", 1000, "at most this many workspaces (1-1000)")
	return c
}

func (a *app) waitCmd() *cobra.Command {
	var state string
	var gen uint64
	var timeout time.Duration
	c := &cobra.Command{
		Use:   "wait ID --state STATE",
		Short: "Wait until a workspace is in a state (exit 4 on timeout), watching the event stream",
		Args:  exactArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			id := args[0]
			if err := fsm.ValidateID(id); err != nil {
				return usageError(err)
			}
			want, ok := fsm.ParseStatus(state)
			if !ok || want == fsm.None {
				return usageError(fmt.Errorf("--state %q: use provisioning, running, stopping, stopped, failed, deleting or deleted", state))
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			store, nc, closeStore, err := a.openStore(ctx)
			if err != nil {
				return err
			}
			defer closeStore()
			start := time.Now()
			h, err := store.Load(ctx, id)
			if err != nil {
				return err
			}
			if h.Last == nil { // no readable event: no workspace
				return withCode(exitRejected, fmt.Errorf("workspace %s does not exist (not_found)", id))
			}
			h, err = read.Waiter{Store: store, NC: nc}.Until(ctx, id, read.Reached(want, gen))
			res := api.ResultOfWait(want, h, time.Since(start))
			res.Reached = err == nil
			if perr := a.printWait(id, res); perr != nil {
				return perr
			}
			switch {
			case errors.Is(err, context.DeadlineExceeded):
				return withCode(exitTimeout, fmt.Errorf("timed out after %v waiting for %s to be %s: it is %s at generation %d",
					timeout, id, want, res.State, res.Generation))
			case err != nil:
				return err
			}
			return nil
		},
	}
	c.Flags().StringVar(&state, "state", "running", "the state to wait for")
	c.Flags().Uint64Var(&gen, "generation", 0, "only at this generation or a later one")
	c.Flags().DurationVar(&timeout, "timeout", 2*time.Minute, "how long to wait")
	return c
}

func (a *app) printWait(id string, w api.WaitResult) error {
	if a.output == "json" {
		return printJSON(a.out, w)
	}
	if w.Reached {
		fmt.Fprintf(a.out, "%s is %s at generation %d (event %d; waited %.1fs)\n", id, w.State, w.Generation, w.EventSeq, w.Waited)
	}
	return nil
}
