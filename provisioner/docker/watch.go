package docker

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"

	"github.com/turnstile-dev/turnstile/internal/retry"
	"github.com/turnstile-dev/turnstile/provisioner"
)

// Watch reports exits and removals of this installation's containers; see
// provisioner.Provisioner. It follows Docker's event stream from the
// daemon's current time and, if the stream breaks, resumes from the last
// event it saw (with backoff), so exits are not lost while the daemon is
// up. Exits during a daemon restart are lost: List shows them.
func (p *Provisioner) Watch(ctx context.Context) (<-chan provisioner.Exit, error) {
	info, err := p.cli.Info(ctx)
	if err != nil {
		return nil, p.engineError(ctx, "watch", "", 0, "cannot reach Docker", err)
	}
	// Start from the daemon's clock: events between now and the stream's
	// subscription are replayed rather than missed.
	since, err := time.Parse(time.RFC3339Nano, info.SystemTime)
	if err != nil {
		since = time.Now()
	}
	out := make(chan provisioner.Exit, 64)
	w := &watcher{p: p, out: out, since: since.UnixNano(), seen: map[string]bool{}, oom: map[string]bool{}}
	go w.run(ctx)
	return out, nil
}

type watcher struct {
	p   *Provisioner
	out chan<- provisioner.Exit
	// since is the time (unix ns) of the last event handled; seen holds
	// the events handled at exactly that time, so a resumed stream does not
	// report them twice.
	since int64
	seen  map[string]bool
	// oom marks containers whose next exit was caused by the OOM killer.
	oom map[string]bool
}

func (w *watcher) run(ctx context.Context) {
	defer close(w.out)
	for failures := 0; ; failures++ {
		err := w.follow(ctx)
		if ctx.Err() != nil {
			return
		}
		backoff := retry.Backoff(failures, 100*time.Millisecond, 5*time.Second)
		w.p.log.Warn("docker event stream broke; resuming", "err", err, "retry_in", backoff)
		if retry.Sleep(ctx, backoff) != nil {
			return
		}
	}
}

// follow reads one event stream until it breaks or ctx ends.
func (w *watcher) follow(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // ends the client's stream goroutine
	msgs, errs := w.p.cli.Events(ctx, events.ListOptions{
		Since: fmt.Sprintf("%d.%09d", w.since/1e9, w.since%1e9),
		Filters: filters.NewArgs(
			filters.Arg("type", string(events.ContainerEventType)),
			filters.Arg("label", provisioner.LabelInstallation+"="+w.p.cfg.Installation),
			filters.Arg("event", string(events.ActionDie)),
			filters.Arg("event", string(events.ActionOOM)),
			filters.Arg("event", string(events.ActionDestroy)),
		),
	})
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-errs:
			return err
		case m := <-msgs:
			if err := w.handle(ctx, m); err != nil {
				return err
			}
		}
	}
}

func (w *watcher) handle(ctx context.Context, m events.Message) error {
	key := m.Actor.ID + "/" + string(m.Action)
	switch {
	case m.TimeNano < w.since || (m.TimeNano == w.since && w.seen[key]):
		return nil // already handled before the stream resumed
	case m.TimeNano > w.since:
		w.since, w.seen = m.TimeNano, map[string]bool{}
	}
	w.seen[key] = true

	attrs := m.Actor.Attributes
	if attrs[provisioner.LabelInstallation] != w.p.cfg.Installation {
		return nil
	}
	ex := provisioner.Exit{
		Workspace:   attrs[provisioner.LabelWorkspace],
		Generation:  generationOf(attrs),
		ContainerID: m.Actor.ID,
		At:          time.Unix(0, m.TimeNano),
	}
	switch m.Action {
	case events.ActionOOM:
		w.oom[m.Actor.ID] = true
		return nil
	case events.ActionDie:
		code, err := strconv.Atoi(attrs["exitCode"])
		// Docker copies the container's labels, its image's included, into
		// the attributes over the exitCode: an image labelled exitCode=0
		// made every exit read as clean. The stopped container's state
		// says; the attribute is left for one already removed.
		if c, ierr := w.p.cli.ContainerInspect(ctx, m.Actor.ID); ierr == nil && c.State != nil && !c.State.Running && !c.State.Restarting {
			code, err = c.State.ExitCode, nil
		}
		if err == nil {
			ex.ExitCode = &code
		}
		if w.oom[m.Actor.ID] {
			ex.Reason = "out of memory"
		}
		delete(w.oom, m.Actor.ID)
	case events.ActionDestroy:
		ex.Removed, ex.Reason = true, "container removed"
		delete(w.oom, m.Actor.ID)
	default:
		return nil
	}
	select {
	case w.out <- ex:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
