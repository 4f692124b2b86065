package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"

	"github.com/turnstile-dev/turnstile/api"
	"github.com/turnstile-dev/turnstile/apiclient"
	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/read"
)

// readTimeout bounds one read (a get, a page of a list, a history).
const readTimeout = 30 * time.Second

// catchUpTimeout is how long a --watch waits for the read model to show an
// event the stream announced before it prints what it has.
const catchUpTimeout = 5 * time.Second

// errWatchNeedsAPI refuses --watch and --follow on the direct path.
func errWatchNeedsAPI(flag string) error {
	return usageError(fmt.Errorf("%s reads serve's event stream over the HTTP API: give --api-url (or run where serve's <data-dir>/api-url is, without --nats-url and --database-url)", flag))
}

// followOptions say on stderr when a stream is lost and picked up again.
func (a *app) followOptions() apiclient.FollowOptions {
	return apiclient.FollowOptions{OnRetry: func(err error, wait time.Duration) {
		fmt.Fprintf(a.err, "turnstile: the event stream was cut (%s); resuming in %v\n", printable(err.Error()), wait.Round(time.Millisecond))
	}}
}

func (a *app) getCmd() *cobra.Command {
	var watch bool
	c := &cobra.Command{
		Use:   "get ID",
		Short: "Show a workspace from the read model, and which event it reflects",
		Long: `Show a workspace from the read model, and which event it reflects. With --watch it
is shown again after each of its events, until Ctrl-C (over the HTTP API; -o json
writes one JSON object a line, -o yaml one document each).`,
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
			if watch && r.api() == nil {
				return errWatchNeedsAPI("--watch")
			}
			get := func(ctx context.Context) (api.Workspace, error) {
				ctx, cancel := context.WithTimeout(ctx, readTimeout)
				defer cancel()
				w, err := r.get(ctx, id)
				if errors.Is(err, read.ErrNoWorkspace) {
					return w, withCode(exitRejected, fmt.Errorf("workspace %s does not exist (not_found): create it first", id))
				}
				return w, err
			}
			if !watch {
				w, err := get(cmd.Context())
				if err != nil {
					return err
				}
				return a.printWorkspace(w, false)
			}
			// What the stream holds now, once the read model shows it:
			// the follow starts after it.
			w, err := catchUp(cmd.Context(), get, func(w api.Workspace) bool { return w.EventSeq >= w.LatestEventSeq })
			if err != nil {
				return err
			}
			if err := a.printWorkspace(w, true); err != nil {
				return err
			}
			ctx := cmd.Context()
			return r.api().FollowWorkspace(ctx, id, max(w.LatestEventSeq, w.EventSeq), a.followOptions(), func(ev api.Event) error {
				w, err := catchUp(ctx, get, func(w api.Workspace) bool { return w.EventSeq >= ev.Seq })
				if err != nil {
					return err
				}
				return a.printWorkspace(w, true)
			})
		},
	}
	c.Flags().BoolVarP(&watch, "watch", "w", false, "show it again after each of its events, until Ctrl-C")
	return c
}

// catchUp reads with get until done holds (the read model shows the event
// a stream announced) or catchUpTimeout passes; then it returns the last
// read, which is never older than the one before.
func catchUp[T any](ctx context.Context, get func(context.Context) (T, error), done func(T) bool) (T, error) {
	deadline := time.Now().Add(catchUpTimeout)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		v, err := get(ctx)
		if err != nil || done(v) || time.Now().After(deadline) {
			return v, err
		}
		select {
		case <-ctx.Done():
			return v, nil
		case <-tick.C:
		}
	}
}

// printWorkspace prints one workspace; again means one of a --watch's.
func (a *app) printWorkspace(w api.Workspace, again bool) error {
	if a.structured() {
		if again {
			return a.printNext(w)
		}
		return a.print(w)
	}
	if again {
		fmt.Fprintln(a.out)
	}
	t := newTable(a.out)
	t.row("ID", w.ID)
	t.row("STATUS", w.Status)
	t.row("GENERATION", strconv.FormatUint(w.Generation, 10))
	t.row("SPEC", fmt.Sprintf("%s (version %d, attempt runs version %d)", describeSpec(w.Spec), w.SpecVersion, w.AttemptSpecVersion))
	t.row("CONTAINER", orDash(w.ContainerID))
	t.row("LAST ERROR", orDash(w.LastError))
	if w.CreatedAt != nil {
		t.row("CREATED", formatTime(*w.CreatedAt)+" ("+formatAge(w.CreatedAt, time.Now())+" ago)")
	}
	if w.UpdatedAt != nil {
		t.row("UPDATED", formatTime(*w.UpdatedAt))
	}
	t.row("REFLECTS", reflects(w))
	return t.flush()
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

// listing is what list prints: every page it read, as one list.
type listing struct {
	api.WorkspaceList
	// from is the smallest checkpoint of the pages (Checkpoint the
	// largest): pages read one after another may reflect different points.
	from uint64
}

func (a *app) listCmd() *cobra.Command {
	var status string
	var limit, pageSize int
	var watch bool
	c := &cobra.Command{
		Use:   "list",
		Short: "List workspaces from the read model",
		Long: `List workspaces from the read model, by id, reading page after page (--page-size each)
until there are no more or --limit are shown. With --watch the list is shown again after
each burst of events, until Ctrl-C (over the HTTP API; -o json writes one JSON object a
line, -o yaml one document each).`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if limit < 0 {
				return usageError(fmt.Errorf("--limit %d: use 0 (all) or more", limit))
			}
			if pageSize < 1 || pageSize > read.MaxListLimit {
				return usageError(fmt.Errorf("--page-size %d: use 1 to %d", pageSize, read.MaxListLimit))
			}
			o := read.ListOptions{Limit: pageSize}
			if status != "" {
				st, ok := fsm.ParseStatus(status)
				if !ok || st == fsm.None {
					return usageError(fmt.Errorf("--status %q: use provisioning, running, stopping, stopped, failed, deleting or deleted", status))
				}
				o.Status = st
			}
			r, err := a.reader()
			if err != nil {
				return err
			}
			defer r.close()
			if watch && r.api() == nil {
				return errWatchNeedsAPI("--watch")
			}
			l, err := listAll(cmd.Context(), r, o, limit)
			if err != nil {
				return err
			}
			if !watch {
				return a.printList(l, false)
			}
			if err := a.printList(l, true); err != nil {
				return err
			}
			return a.watchList(cmd.Context(), r, o, limit, l.Checkpoint)
		},
	}
	c.Flags().StringVar(&status, "status", "", "only workspaces in this state")
	c.Flags().IntVar(&limit, "limit", 0, "at most this many workspaces (0: all)")
	c.Flags().IntVar(&pageSize, "page-size", read.MaxListLimit, fmt.Sprintf("workspaces read per request (1-%d)", read.MaxListLimit))
	c.Flags().BoolVarP(&watch, "watch", "w", false, "show the list again after each burst of events, until Ctrl-C")
	return c
}

// listAll reads pages from o.After on, following each page's next, until
// there are no more or it has limit (0: no limit) workspaces.
func listAll(ctx context.Context, r reader, o read.ListOptions, limit int) (listing, error) {
	out := listing{WorkspaceList: api.WorkspaceList{Workspaces: []api.Workspace{}}}
	for first := true; ; first = false {
		if limit > 0 {
			o.Limit = min(o.Limit, limit-len(out.Workspaces))
		}
		pctx, cancel := context.WithTimeout(ctx, readTimeout)
		page, err := r.list(pctx, o)
		cancel()
		if err != nil {
			return out, err
		}
		out.Workspaces = append(out.Workspaces, page.Workspaces...)
		out.Next = page.Next
		if first || page.Checkpoint < out.from {
			out.from = page.Checkpoint
		}
		out.Checkpoint = max(out.Checkpoint, page.Checkpoint)
		if page.Next == "" || (limit > 0 && len(out.Workspaces) >= limit) {
			return out, nil
		}
		o.After = page.Next
	}
}

// watchList follows every workspace's events after stream sequence after
// and lists again once the read model has applied the newest one seen;
// events that arrive meanwhile make one more listing, not one each.
func (a *app) watchList(ctx context.Context, r reader, o read.ListOptions, limit int, after uint64) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var newest atomic.Uint64
	newest.Store(after)
	wake := make(chan struct{}, 1)
	followed := make(chan error, 1)
	go func() {
		followed <- r.api().FollowAll(ctx, after, a.followOptions(), func(ev api.Event) error {
			if ev.StreamSeq > newest.Load() {
				newest.Store(ev.StreamSeq)
			}
			select {
			case wake <- struct{}{}:
			default:
			}
			return nil
		})
	}()
	shown := after
	for {
		select {
		case <-ctx.Done():
			return <-followed
		case err := <-followed:
			return err
		case <-wake:
		}
		want := newest.Load()
		if want <= shown {
			continue
		}
		l, err := catchUp(ctx, func(ctx context.Context) (listing, error) { return listAll(ctx, r, o, limit) },
			func(l listing) bool { return l.from >= want })
		if err != nil {
			return err
		}
		if ctx.Err() != nil {
			return <-followed
		}
		if err := a.printList(l, true); err != nil {
			return err
		}
		shown = max(want, l.from)
	}
}

// printList prints a listing; again means one of a --watch's.
func (a *app) printList(l listing, again bool) error {
	if a.structured() {
		if again {
			return a.printNext(l.WorkspaceList)
		}
		return a.print(l.WorkspaceList)
	}
	now := time.Now()
	t := newTable(a.out, "ID", "STATUS", "GEN", "EVENT", "AGE", "UPDATED", "IMAGE", "LAST ERROR")
	for _, w := range l.Workspaces {
		updated := "-"
		if w.UpdatedAt != nil {
			updated = formatTime(*w.UpdatedAt)
		}
		t.row(w.ID, w.Status, strconv.FormatUint(w.Generation, 10), strconv.FormatUint(w.EventSeq, 10), formatAge(w.CreatedAt, now),
			updated, orDash(w.Spec.Image), orDash(w.LastError))
	}
	if err := t.flush(); err != nil {
		return err
	}
	at := fmt.Sprintf("stream seq %d", l.Checkpoint)
	if l.from != l.Checkpoint {
		at = fmt.Sprintf("stream seq %d to %d (one page after another)", l.from, l.Checkpoint)
	}
	more := ""
	if l.Next != "" {
		more = fmt.Sprintf("; more after %s (raise --limit)", l.Next)
	}
	fmt.Fprintf(a.out, "%d workspace(s) from the read model at %s; GEN and EVENT are the generation and event each row reflects; AGE is since created%s\n",
		len(l.Workspaces), at, more)
	if again {
		fmt.Fprintln(a.out)
	}
	return nil
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
			hc, viaAPI, err := a.apiClient()
			if err != nil {
				return err
			}
			var res api.WaitResult
			if viaAPI {
				// The server's own timeout answers; the context only
				// guards against a server that does not.
				ctx, cancel := context.WithTimeout(cmd.Context(), timeout+api.WaitGrace)
				defer cancel()
				res, err = hc.Wait(ctx, id, want, gen, timeout)
			} else {
				ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
				defer cancel()
				res, err = a.waitDirect(ctx, id, want, gen)
			}
			if errors.Is(err, read.ErrNoWorkspace) {
				return withCode(exitRejected, fmt.Errorf("workspace %s does not exist (not_found)", id))
			}
			if err != nil && !errors.Is(err, context.DeadlineExceeded) {
				return err
			}
			if perr := a.printWait(id, res); perr != nil {
				return perr
			}
			if !res.Reached {
				return withCode(exitTimeout, fmt.Errorf("timed out after %v waiting for %s to be %s: it is %s at generation %d",
					timeout, id, want, res.State, res.Generation))
			}
			return nil
		},
	}
	c.Flags().StringVar(&state, "state", "running", "the state to wait for")
	c.Flags().Uint64Var(&gen, "generation", 0, "only at this generation or a later one")
	c.Flags().DurationVar(&timeout, "timeout", 2*time.Minute, "how long to wait")
	return c
}

// waitDirect waits on the event stream itself; ctx's deadline is the
// wait's timeout.
func (a *app) waitDirect(ctx context.Context, id string, want fsm.Status, gen uint64) (api.WaitResult, error) {
	store, nc, closeStore, err := a.openStore(ctx)
	if err != nil {
		return api.WaitResult{}, err
	}
	defer closeStore()
	start := time.Now()
	h, err := store.Load(ctx, id)
	if err != nil {
		return api.WaitResult{}, err
	}
	if h.Last == nil { // no readable event: no workspace
		return api.WaitResult{}, read.ErrNoWorkspace
	}
	h, err = read.Waiter{Store: store, NC: nc}.UntilFrom(ctx, id, h, read.Reached(want, gen))
	res := api.ResultOfWait(want, h, time.Since(start))
	res.Reached = err == nil
	return res, err
}

func (a *app) printWait(id string, w api.WaitResult) error {
	if a.structured() {
		return a.print(w)
	}
	if w.Reached {
		fmt.Fprintf(a.out, "%s is %s at generation %d (event %d; waited %.1fs)\n", id, w.State, w.Generation, w.EventSeq, w.Waited)
	}
	return nil
}
