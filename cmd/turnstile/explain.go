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
	"github.com/turnstile-dev/turnstile/provisioner/worker"
	"github.com/turnstile-dev/turnstile/read"
)

// explainCmd is `turnstile explain ID` (issue 14 item 5): what the
// workspace is waiting for, read from the streams as GET .../explain does.
func (a *app) explainCmd() *cobra.Command {
	var o api.ExplainOptions
	o.Deadlines = worker.DefaultDeadlines()
	dl := map[fsm.Status]*time.Duration{}
	for _, st := range []fsm.Status{fsm.Provisioning, fsm.Stopping, fsm.Deleting} {
		d := o.Deadlines[st]
		dl[st] = &d
	}
	c := &cobra.Command{
		Use:   "explain ID",
		Short: "Say what a workspace is waiting for: the action in flight, the commands queued, the commands allowed",
		Long: `Say what a workspace is waiting for: the action in flight (kind, generation, when it
started, its deadline), the commands queued behind it (published, not yet decided by the
engine) and the commands allowed now. Over the HTTP API the deadlines are serve's own;
on the direct path (NATS) they are serve's defaults unless given: serve's --deadline-*
flags are not readable from there. A queued command whose actor reads as the API's
("api:<token>") shows it as unproven when the API's proof of it does not verify (a
NATS user may write any actor; the engine refuses such a command): on the direct
path, which cannot read serve's actor key, every API actor shows so.`,
		Args: exactArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			id := args[0]
			if err := fsm.ValidateID(id); err != nil {
				return usageError(err)
			}
			for st, d := range dl {
				o.Deadlines[st] = *d
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 5*time.Minute)
			defer cancel()
			x, err := a.explain(ctx, id, o)
			if errors.Is(err, read.ErrNoWorkspace) {
				return withCode(exitRejected, fmt.Errorf("workspace %s does not exist (not_found)", id))
			}
			if err != nil {
				return err
			}
			if a.structured() {
				return a.print(x)
			}
			return a.printExplanation(x)
		},
	}
	f := c.Flags()
	f.DurationVar(dl[fsm.Provisioning], "deadline-provisioning", *dl[fsm.Provisioning], "serve's --deadline-provisioning, to show the deadline (direct path only)")
	f.DurationVar(dl[fsm.Stopping], "deadline-stopping", *dl[fsm.Stopping], "serve's --deadline-stopping, to show the deadline (direct path only)")
	f.DurationVar(dl[fsm.Deleting], "deadline-deleting", *dl[fsm.Deleting], "serve's --deadline-deleting, to show the deadline (direct path only)")
	f.StringVar(&o.Durable, "engine-durable", api.DefaultEngineDurable, "the engine's durable consumer on the command stream")
	return c
}

// explain asks the API when the CLI speaks HTTP, else reads the streams
// with o.
func (a *app) explain(ctx context.Context, id string, o api.ExplainOptions) (api.Explanation, error) {
	hc, viaAPI, err := a.apiClient()
	if err != nil {
		return api.Explanation{}, err
	}
	if viaAPI {
		return hc.Explain(ctx, id)
	}
	store, _, closeStore, err := a.openStore(ctx)
	if err != nil {
		return api.Explanation{}, err
	}
	defer closeStore()
	return api.Explain(ctx, store, id, o)
}

func (a *app) printExplanation(x api.Explanation) error {
	t := newTable(a.out)
	t.row("WORKSPACE", x.Workspace)
	t.row("STATE", x.State+" (generation "+strconv.FormatUint(x.Generation, 10)+", event "+strconv.FormatUint(x.EventSeq, 10)+")")
	if x.LastError != "" {
		t.row("LAST ERROR", x.LastError)
	}
	if f := x.InFlight; f != nil {
		deadline := "none"
		if f.Deadline != nil {
			left := time.Until(*f.Deadline).Round(time.Second)
			deadline = formatTime(*f.Deadline) + " (in " + left.String() + ")"
			if left < 0 {
				deadline = formatTime(*f.Deadline) + " (passed " + (-left).String() + " ago)"
			}
		}
		t.row("IN FLIGHT", fmt.Sprintf("%s, generation %d, started %s by %s %s (%s)", f.Kind, f.Generation,
			formatTime(f.Started), f.Cause.Kind, f.Cause.Command, orDash(f.Cause.Actor)))
		t.row("DEADLINE", deadline)
	} else {
		t.row("IN FLIGHT", "nothing")
	}
	if len(x.Queued) == 0 {
		t.row("QUEUED", "nothing")
	}
	for i, q := range x.Queued {
		label := ""
		if i == 0 {
			label = "QUEUED"
		}
		by := orDash(q.Actor)
		if q.UnprovenActor != "" {
			// It claims the API's actor without the API's proof: perhaps
			// a NATS user's, which the engine will refuse.
			by = q.UnprovenActor + " (unproven)"
		}
		t.row(label, fmt.Sprintf("%s %s by %s since %s", q.Type, q.CommandID, by, formatTime(q.QueuedAt)))
	}
	t.row("ALLOWED", commandList(x.Allowed))
	return t.flush()
}
