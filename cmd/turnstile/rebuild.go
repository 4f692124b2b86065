package main

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/projector"
)

func (a *app) rebuildCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "rebuild",
		Short: "Rebuild the read model from the event stream (the live one keeps serving until the swap)",
		Args:  exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			pool, err := a.openOwnerPool(cctx)
			if err != nil {
				return err
			}
			defer pool.Close()
			nc, err := a.connectNATSAdmin(cctx)
			if err != nil {
				return err
			}
			defer nc.Close()
			js, err := jetstream.New(nc)
			if err != nil {
				return err
			}
			log, err := a.logger()
			if err != nil {
				return err
			}
			store, err := events.OpenStore(cctx, js, events.NewNames(a.prefix), events.Codec{})
			if err != nil {
				return err
			}
			p, err := projector.New(projector.Config{Store: store, Pool: pool, Logger: log})
			if err != nil {
				return err
			}
			var progress func(projector.Progress)
			if a.isTerminal(a.err) {
				progress = rebuildBar(a.err)
			}
			st, err := p.Rebuild(ctx, progress)
			if err != nil {
				return fmt.Errorf("rebuild: %w", err)
			}
			if a.structured() {
				return a.print(map[string]any{"through_stream_seq": st.Through, "messages": st.Messages,
					"events": st.Events, "commands": st.Commands, "workspaces": st.Workspaces, "quarantined": st.Quarantined,
					"skipped": st.Skipped, "seconds": st.Duration.Seconds()})
			}
			fmt.Fprintf(a.out, "rebuilt the read model through stream seq %d: %d message(s), %d event(s), %d command(s), %d workspace(s) in %v\n",
				st.Through, st.Messages, st.Events, st.Commands, st.Workspaces, st.Duration.Round(time.Millisecond))
			if st.Quarantined > 0 {
				fmt.Fprintf(a.out, "%d unreadable message(s) quarantined: see the dead_letters table\n", st.Quarantined)
			}
			if st.Skipped > 0 {
				fmt.Fprintf(a.out, "%d stream sequence(s) passed over: expired outcomes (--rejected-retention), whose rows are gone\n", st.Skipped)
			}
			return nil
		},
	}
}
