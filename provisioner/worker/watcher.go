package worker

import (
	"context"
	"errors"
	"log/slog"
	"sync"

	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/internal/retry"
	"github.com/turnstile-dev/turnstile/provisioner"
)

// WatcherConfig wires a Watcher; every field but Logger and Metrics is required.
type WatcherConfig struct {
	Store       *events.Store
	Provisioner provisioner.Provisioner
	Publisher   Publisher
	Logger      *slog.Logger
	Metrics     *Metrics
}

// Watcher turns container exits into container_exited reports.
type Watcher struct {
	cfg    WatcherConfig
	log    *slog.Logger
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// NewWatcher returns a watcher for cfg.
func NewWatcher(cfg WatcherConfig) (*Watcher, error) {
	if cfg.Store == nil || cfg.Provisioner == nil || cfg.Publisher == nil {
		return nil, errors.New("watcher: Store, Provisioner and Publisher are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Watcher{cfg: cfg, log: cfg.Logger}, nil
}

// Open starts watching; if the engine cannot be reached it keeps trying.
func (w *Watcher) Open(context.Context) error {
	ctx, cancel := context.WithCancel(context.Background())
	w.cancel = cancel
	w.wg.Go(func() { w.run(ctx) })
	return nil
}

// Close stops watching.
func (w *Watcher) Close() error {
	if w.cancel != nil {
		w.cancel()
		w.wg.Wait()
		w.cancel = nil
	}
	return nil
}

func (w *Watcher) run(ctx context.Context) {
	for attempt := 0; ctx.Err() == nil; attempt++ {
		ch, err := w.cfg.Provisioner.Watch(ctx)
		if err != nil {
			w.log.Warn("watcher: cannot watch the container engine; retrying", "err", err)
			if retry.Sleep(ctx, backoff(attempt)) != nil {
				return
			}
			continue
		}
		attempt = 0
		for ex := range ch {
			w.report(ctx, ex)
		}
		// The channel closes when ctx ends or the engine's stream breaks;
		// the reconciler finds exits missed in between.
	}
}

// shortID keeps a container id's first 12 characters of [A-Za-z0-9_-].
func shortID(id string) string {
	var b []byte
	for i := 0; i < len(id) && len(b) < 12; i++ {
		c := id[i]
		if c == '-' || c == '_' || '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' {
			b = append(b, c)
		}
	}
	return string(b)
}

func (w *Watcher) report(ctx context.Context, ex provisioner.Exit) {
	if fsm.ValidateID(ex.Workspace) != nil || ex.Generation == 0 {
		return
	}
	reason := ex.Reason
	if ex.Removed && reason == "" {
		reason = "container " + provisioner.ContainerName(ex.Workspace) + " was removed"
	}
	// The container is part of the id: a generation's container can be
	// adopted and restarted by a redone provision, and its later exit is a
	// new observation. Its exit and its removal share one id.
	id := reportID("exit", ex.Workspace, ex.Generation)
	if c := shortID(ex.ContainerID); c != "" {
		id += "-" + c
	}
	cmd := fsm.Command{ID: id, Type: fsm.ContainerExited,
		Workspace: ex.Workspace, Generation: ex.Generation, ExitCode: ex.ExitCode, Reason: truncate(reason, fsm.MaxReasonLen), Actor: "watcher"}
	w.log.Info("watcher: container exited", "workspace", ex.Workspace, "generation", ex.Generation, "reason", reason)
	w.cfg.Metrics.report("exit")
	if err := report(ctx, w.cfg.Store, w.cfg.Publisher, w.log, w.cfg.Metrics, cmd); err != nil && ctx.Err() == nil {
		w.log.Error("watcher: report", "command", cmd.ID, "err", err)
	}
}
