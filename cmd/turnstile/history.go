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

func (a *app) historyCmd() *cobra.Command {
	var follow bool
	c := &cobra.Command{
		Use:   "history ID",
		Short: "Show a workspace's events from the JetStream stream as a timeline",
		Long: `Show a workspace's events from the JetStream stream as a timeline. With --follow the
new events are shown as they are recorded, until Ctrl-C; a lost connection is resumed
where it stopped (over the HTTP API; -o json writes one JSON event a line, -o yaml one
document each).`,
		Args: exactArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			id := args[0]
			if err := fsm.ValidateID(id); err != nil {
				return usageError(err)
			}
			r, err := a.reader()
			if err != nil {
				return err
			}
			defer r.close()
			if follow && r.api() == nil {
				return errWatchNeedsAPI("--follow")
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 5*time.Minute)
			evs, err := r.history(ctx, id)
			cancel()
			if errors.Is(err, read.ErrNoWorkspace) {
				return withCode(exitRejected, fmt.Errorf("workspace %s has no history (not_found)", id))
			}
			if err != nil {
				return err
			}
			if !follow {
				if a.structured() {
					return a.print(map[string]any{"workspace": id, "events": evs})
				}
				t := newTable(a.out, historyHeader...)
				for _, e := range evs {
					t.row(historyRow(e)...)
				}
				return t.flush()
			}
			// Following: the events so far, then each new one as it comes.
			t := &liveTable{w: a.out}
			show := func(e api.Event) error {
				if a.structured() {
					return a.printNext(e)
				}
				return t.row(historyRow(e)...)
			}
			t.add(historyHeader)
			for _, e := range evs {
				t.add(historyRow(e))
			}
			if !a.structured() {
				if err := t.row(historyHeader...); err != nil {
					return err
				}
			}
			for _, e := range evs {
				if err := show(e); err != nil {
					return err
				}
			}
			return r.api().FollowWorkspace(cmd.Context(), id, evs[len(evs)-1].Seq, a.followOptions(), show)
		},
	}
	c.Flags().BoolVarP(&follow, "follow", "f", false, "show new events as they are recorded, until Ctrl-C")
	return c
}

var historyHeader = []string{"TIME", "SEQ", "STREAM", "GEN", "EVENT", "FROM → TO", "ACTOR", "COMMAND", "REASON"}

func historyRow(e api.Event) []string {
	return []string{formatTime(e.Time), strconv.FormatUint(e.Seq, 10), strconv.FormatUint(e.StreamSeq, 10),
		strconv.FormatUint(e.Generation, 10), string(e.Type), e.From + " → " + e.To, orDash(e.Actor), e.CommandID, orDash(e.Reason)}
}
