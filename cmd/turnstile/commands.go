package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"

	"github.com/turnstile-dev/turnstile/api"
	"github.com/turnstile-dev/turnstile/client"
	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/read"
)

// lifecycleFlags are the flags every lifecycle command has.
type lifecycleFlags struct {
	wait      bool
	timeout   time.Duration
	commandID string
	spec      specFlags
}

func (a *app) lifecycleCmds() []*cobra.Command {
	return []*cobra.Command{
		a.lifecycleCmd(fsm.Create, "Create a workspace and provision its container",
			"Create a workspace; it is provisioned at generation 1 (or the next generation, if the id\nwas deleted before: its history goes on)."),
		a.lifecycleCmd(fsm.Start, "Start a stopped or failed workspace", ""),
		a.lifecycleCmd(fsm.Stop, "Stop a workspace (cancels a provisioning attempt)", ""),
		a.lifecycleCmd(fsm.Restart, "Provision a workspace anew at the next generation", ""),
		a.lifecycleCmd(fsm.Delete, "Delete a workspace, its container and its volume", ""),
		a.lifecycleCmd(fsm.Configure, "Change a workspace's spec (a running workspace restarts to apply it)",
			"Change a workspace's spec. The given flags change the current spec; --replace starts\nfrom an empty one. Running: one restart applies it. Provisioning: one follow-up attempt\napplies the newest spec. Stopped or failed: applied at the next start."),
	}
}

func (a *app) lifecycleCmd(t fsm.CommandType, short, long string) *cobra.Command {
	var f lifecycleFlags
	c := &cobra.Command{
		Use:     string(t) + " ID",
		Short:   short,
		Long:    long,
		Example: fmt.Sprintf("  turnstile %s demo --wait\n  turnstile %s demo --command-id my-%s-1 -o json", t, t, t),
		Args:    exactArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.runLifecycle(cmd, t, args[0], &f)
		},
	}
	fs := c.Flags()
	fs.BoolVar(&f.wait, "wait", false, "wait for the steady state the command leads to (running, stopped or deleted)")
	fs.DurationVar(&f.timeout, "timeout", 2*time.Minute, "how long to wait for the outcome and, with --wait, for the state")
	fs.StringVar(&f.commandID, "command-id", "", "command id, the idempotency key: sending the same id again yields the first outcome (default: a new UUID)")
	if t == fsm.Create || t == fsm.Configure {
		f.spec.register(fs, t == fsm.Configure)
	}
	return c
}

func (a *app) runLifecycle(cmd *cobra.Command, t fsm.CommandType, id string, f *lifecycleFlags) error {
	if err := fsm.ValidateID(id); err != nil {
		return usageError(err)
	}
	if f.commandID != "" {
		if err := fsm.ValidateUserCommandID(f.commandID); err != nil {
			return usageError(fmt.Errorf("--command-id: %w", err))
		}
	}
	if t == fsm.Configure && !f.spec.given(cmd.Flags()) {
		return usageError(errors.New("configure needs at least one of --image, --env, --secret-env, --label, --cpus, --memory, --profile"))
	}
	for _, w := range f.spec.plainSecretWarnings() {
		fmt.Fprintln(a.err, w)
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), f.timeout)
	defer cancel()
	c := fsm.Command{ID: f.commandID, Type: t, Workspace: id}
	if c.ID == "" {
		c.ID = client.NewCommandID()
	}
	// Every spec that needs no server is built (and refused) before
	// connecting: create's, and configure's with --replace.
	if (t == fsm.Create && f.spec.given(cmd.Flags())) || (t == fsm.Configure && f.spec.replace) {
		spec, err := f.spec.apply(cmd.Flags(), fsm.Spec{})
		if err != nil {
			return usageError(err)
		}
		c.Spec = &spec
	}
	if t == fsm.Configure {
		if err := f.spec.check(cmd.Flags()); err != nil {
			return usageError(err)
		}
	}
	cl, nc, closeFn, err := a.openClient(ctx)
	if err != nil {
		return err
	}
	defer closeFn()
	if t == fsm.Configure && !f.spec.replace {
		h, err := cl.Store().Load(ctx, id)
		if err != nil {
			return err
		}
		spec, err := f.spec.apply(cmd.Flags(), h.State.Spec)
		if err != nil {
			return usageError(err)
		}
		c.Spec = &spec
	}
	start := time.Now()
	o, err := cl.Send(ctx, c)
	var reused *client.IDReusedError
	switch {
	case errors.As(err, &reused):
		return usageError(fmt.Errorf("--command-id: %w", err))
	case errors.Is(err, client.ErrNoOutcome):
		return withCode(exitTimeout, fmt.Errorf("no outcome for %s %s within %v: the command is stored and will be handled; run it again with --command-id %s to learn its outcome",
			t, id, f.timeout, c.ID))
	case err != nil:
		return err
	}
	res := api.ResultOf(o)
	if o.Outcome == fsm.Rejected {
		return a.rejected(res)
	}
	var waitErr error
	if f.wait {
		waitErr = a.waitSteady(ctx, nc, cl.Store(), o, start, &res, f.timeout)
	}
	if err := a.printResult(res); err != nil {
		return err
	}
	return waitErr
}

// rejected prints a refusal (as JSON on stdout with -o json) and returns
// the exit error with the reason, for stderr.
func (a *app) rejected(res api.CommandResult) error {
	if a.output == "json" {
		if err := printJSON(a.out, res); err != nil {
			return err
		}
	}
	rej := res.Rejection
	if rej == nil {
		return withCode(exitError, fmt.Errorf("%s %s was rejected without a reason (command %s)", res.Command, res.Workspace, res.CommandID))
	}
	err := fmt.Errorf("%s %s refused (%s): %s\n  state: %s, generation %d; allowed now: %s",
		res.Command, res.Workspace, rej.Code, rej.Message, rej.State, rej.Generation, commandList(rej.Allowed))
	return withCode(exitCodeOf(rej.Code), err)
}

// waitSteady waits, after an accepted or no-op command, until the workspace
// leaves the in-flight state it is in at the command's generation, and
// records in res whether it reached the state the command leads to.
func (a *app) waitSteady(ctx context.Context, nc *nats.Conn, store *events.Store, o events.OutcomeRecord, start time.Time, res *api.CommandResult, timeout time.Duration) error {
	want := api.Target(o.State)
	h, err := read.Waiter{Store: store, NC: nc}.Until(ctx, o.Workspace, read.Settled(o.Generation))
	wr := api.ResultOfWait(want, h, time.Since(start))
	res.Wait = &wr
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return withCode(exitTimeout, fmt.Errorf("timed out after %v waiting for %s to be %s: it is %s at generation %d",
			timeout, o.Workspace, want, wr.State, wr.Generation))
	case err != nil:
		return err
	case !wr.Reached:
		msg := fmt.Sprintf("%s ended %s at generation %d instead of %s", o.Workspace, wr.State, wr.Generation, want)
		if wr.State == fsm.Failed.String() && wr.LastError != "" {
			msg += ": " + wr.LastError
		}
		return withCode(exitError, errors.New(msg))
	}
	return nil
}

func (a *app) printResult(res api.CommandResult) error {
	if a.output == "json" {
		return printJSON(a.out, res)
	}
	switch res.Outcome {
	case fsm.Accepted:
		fmt.Fprintf(a.out, "%s %s: accepted; %s at generation %d (event %d, command %s)\n",
			res.Command, res.Workspace, res.State, res.Generation, res.EventSeq, res.CommandID)
	default:
		fmt.Fprintf(a.out, "%s %s: %s (%s); %s at generation %d (command %s)\n",
			res.Command, res.Workspace, res.Outcome, res.Reason, res.State, res.Generation, res.CommandID)
	}
	if w := res.Wait; w != nil {
		fmt.Fprintf(a.out, "%s is %s at generation %d (event %d; waited %.1fs)\n", res.Workspace, w.State, w.Generation, w.EventSeq, w.Waited)
	}
	return nil
}
