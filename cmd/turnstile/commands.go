package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"

	"github.com/turnstile-dev/turnstile/api"
	"github.com/turnstile-dev/turnstile/apiclient"
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
	// A context that has ended sends nothing, and says only "context
	// deadline exceeded".
	if f.timeout <= 0 {
		return usageError(fmt.Errorf("--timeout %v: use a positive duration, such as 30s", f.timeout))
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
	hc, viaAPI, err := a.apiClient()
	if err != nil {
		return err
	}
	if viaAPI {
		return a.runLifecycleHTTP(ctx, cmd, hc, c, f)
	}
	cl, nc, closeFn, err := a.openClient(ctx)
	if err != nil {
		return noOutcome(c, f.timeout, false, err)
	}
	defer closeFn()
	if t == fsm.Configure && !f.spec.replace {
		h, err := cl.Store().Load(ctx, id)
		if err != nil {
			return noOutcome(c, f.timeout, false, err)
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
	case err != nil:
		return noOutcome(c, f.timeout, true, err)
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

// noOutcome is the error of command c, which ended with err before its
// outcome was known. When that is for want of time (serve or the engine
// said it had none yet, or --timeout passed), it is exit 4 with what the
// user can do: the command id, whoever made it, since sending it again
// with that id learns the outcome and never handles the command twice.
// sent says whether c may have gone out. Any other err is as it is.
func noOutcome(c fsm.Command, timeout time.Duration, sent bool, err error) error {
	switch {
	case errors.Is(err, client.ErrNoOutcome):
		return withCode(exitTimeout, fmt.Errorf("no outcome for %s %s within %v: the command is stored and will be handled; run it again with --command-id %s to learn its outcome",
			c.Type, c.Workspace, timeout, c.ID))
	case !errors.Is(err, context.DeadlineExceeded):
		return err
	case !sent:
		return withCode(exitTimeout, fmt.Errorf("%s %s: nothing was sent within --timeout %v (%w); run it again, with a longer --timeout",
			c.Type, c.Workspace, timeout, err))
	}
	return withCode(exitTimeout, fmt.Errorf("no outcome for %s %s within %v: the command may be stored, and then it will be handled; run it again with --command-id %s to learn its outcome (the same id is never handled twice)",
		c.Type, c.Workspace, timeout, c.ID))
}

// rejected prints a refusal (as JSON on stdout with -o json) and returns
// the exit error with the reason, for stderr.
func (a *app) rejected(res api.CommandResult) error {
	if a.structured() {
		if err := a.print(res); err != nil {
			return err
		}
	}
	rej := res.Rejection
	if rej == nil {
		return withCode(exitError, fmt.Errorf("%s %s was rejected without a reason (command %s)", res.Command, res.Workspace, res.CommandID))
	}
	err := fmt.Errorf("%s %s refused (%s): %s\n  state: %s, generation %d; allowed now: %s",
		res.Command, res.Workspace, rej.Code, printable(rej.Message), rej.State, rej.Generation, commandList(rej.Allowed))
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
			msg += ": " + printable(wr.LastError)
		}
		return withCode(exitError, errors.New(msg))
	}
	return nil
}

func (a *app) printResult(res api.CommandResult) error {
	if a.structured() {
		return a.print(res)
	}
	switch res.Outcome {
	case fsm.Accepted:
		fmt.Fprintf(a.out, "%s %s: accepted; %s at generation %d (event %d, command %s)\n",
			res.Command, res.Workspace, res.State, res.Generation, res.EventSeq, res.CommandID)
	default:
		fmt.Fprintf(a.out, "%s %s: %s (%s); %s at generation %d (command %s)\n",
			res.Command, res.Workspace, res.Outcome, printable(res.Reason), res.State, res.Generation, res.CommandID)
	}
	if w := res.Wait; w != nil {
		fmt.Fprintf(a.out, "%s is %s at generation %d (event %d; waited %.1fs)\n", res.Workspace, w.State, w.Generation, w.EventSeq, w.Waited)
	}
	return nil
}

// runLifecycleHTTP sends c through the HTTP API and, with --wait, follows
// the workspace's events until it settles.
func (a *app) runLifecycleHTTP(ctx context.Context, cmd *cobra.Command, hc *apiclient.Client, c fsm.Command, f *lifecycleFlags) error {
	if c.Type == fsm.Configure && !f.spec.replace {
		// The flags change the current spec: the newest the stream has,
		// so wait (briefly) for the read model to show the newest event.
		w, err := catchUp(ctx, func(ctx context.Context) (api.Workspace, error) { return hc.Get(ctx, c.Workspace) },
			func(w api.Workspace) bool { return w.EventSeq >= w.LatestEventSeq })
		if err != nil && !errors.Is(err, read.ErrNoWorkspace) {
			return noOutcome(c, f.timeout, false, err)
		}
		// The engine replaces the whole spec: one built on a stale read
		// would undo the changes of the events the read model lacks.
		if err == nil && w.EventSeq < w.LatestEventSeq {
			return fmt.Errorf("configure %s: the read model is behind (event %d of %d) after %v, and the new spec is built on the current one: nothing was sent; try again, or use --replace with the whole spec",
				c.Workspace, w.EventSeq, w.LatestEventSeq, catchUpTimeout)
		}
		// An unknown workspace goes with an empty spec: the lifecycle
		// refuses it (not_found) with what is allowed.
		spec, err := f.spec.apply(cmd.Flags(), w.Spec)
		if err != nil {
			return usageError(err)
		}
		c.Spec = &spec
	}
	start := time.Now()
	res, err := hc.Send(ctx, c)
	var ae *apiclient.Error
	switch {
	case errors.As(err, &ae) && ae.Body.Code == api.CodeIDReused:
		return usageError(fmt.Errorf("--command-id: %w", err))
	case errors.As(err, &ae) && ae.Code() == fsm.CodeInvalid:
		return usageError(err)
	case err != nil:
		return noOutcome(c, f.timeout, true, err)
	}
	if res.Outcome == fsm.Rejected {
		return a.rejected(res)
	}
	var waitErr error
	if f.wait {
		waitErr = a.waitSteadyHTTP(ctx, hc, start, &res, f.timeout)
	}
	if err := a.printResult(res); err != nil {
		return err
	}
	return waitErr
}

// waitSteadyHTTP is waitSteady over the API: it follows the workspace's
// events from the command's on until it leaves its in-flight state at the
// command's generation or later.
func (a *app) waitSteadyHTTP(ctx context.Context, hc *apiclient.Client, start time.Time, res *api.CommandResult, timeout time.Duration) error {
	st, _ := fsm.ParseStatus(res.State)
	want := api.Target(st)
	gen := res.Generation
	wr := api.WaitResult{Want: want.String(), State: res.State, Generation: res.Generation, EventSeq: res.EventSeq}
	settled := func() bool {
		s, _ := fsm.ParseStatus(wr.State)
		return read.Settled(gen)(fsm.Workspace{Status: s, Generation: wr.Generation})
	}
	if !settled() {
		after := res.EventSeq
		if after == 0 { // no event of its own (a no-op): from the newest one on
			w, err := hc.Get(ctx, res.Workspace)
			if err != nil && ctx.Err() == nil {
				return err
			}
			// Out of time, w is empty: the follow returns at once, and
			// the timeout is said below.
			after = max(w.LatestEventSeq, w.EventSeq)
		}
		errSettled := errors.New("settled")
		err := hc.FollowWorkspace(ctx, res.Workspace, after, a.followOptions(), func(ev api.Event) error {
			wr.State, wr.Generation, wr.EventSeq, wr.LastError = ev.To, ev.Generation, ev.Seq, ""
			if ev.To == fsm.Failed.String() {
				wr.LastError = ev.Reason
			}
			if settled() {
				return errSettled
			}
			return nil
		})
		if err != nil && !errors.Is(err, errSettled) {
			return err
		}
	}
	wr.Reached = wr.State == want.String()
	wr.Waited = time.Since(start).Seconds()
	res.Wait = &wr
	switch {
	case !settled() && ctx.Err() != nil:
		return withCode(exitTimeout, fmt.Errorf("timed out after %v waiting for %s to be %s: it is %s at generation %d",
			timeout, res.Workspace, want, wr.State, wr.Generation))
	case !wr.Reached:
		msg := fmt.Sprintf("%s ended %s at generation %d instead of %s", res.Workspace, wr.State, wr.Generation, want)
		if wr.State == fsm.Failed.String() && wr.LastError != "" {
			msg += ": " + printable(wr.LastError)
		}
		return withCode(exitError, errors.New(msg))
	}
	return nil
}
