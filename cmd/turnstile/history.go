package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/read"
)

func (a *app) historyCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "history ID",
		Short: "Show a workspace's events from the JetStream stream as a timeline",
		Args:  exactArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			id := args[0]
			if err := fsm.ValidateID(id); err != nil {
				return usageError(err)
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 5*time.Minute)
			defer cancel()
			store, _, closeStore, err := a.openStore(ctx)
			if err != nil {
				return err
			}
			defer closeStore()
			evs, err := read.History(ctx, store, id)
			if errors.Is(err, read.ErrNoWorkspace) {
				return withCode(exitRejected, fmt.Errorf("workspace %s has no history (not_found)", id))
			}
			if err != nil {
				return err
			}
			if a.output == "json" {
				return printJSON(a.out, map[string]any{"workspace": id, "events": evs})
			}
			t := newTable(a.out, "TIME", "SEQ", "STREAM", "GEN", "EVENT", "FROM → TO", "ACTOR", "COMMAND", "REASON")
			for _, e := range evs {
				t.row(formatTime(e.Time), strconv.FormatUint(e.Seq, 10), strconv.FormatUint(e.StreamSeq, 10),
					strconv.FormatUint(e.Generation, 10), string(e.Type), e.From+" → "+e.To, orDash(e.Actor), e.CommandID, orDash(e.Reason))
			}
			return t.flush()
		},
	}
}
