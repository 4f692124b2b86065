package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/turnstile-dev/turnstile/client"
	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/provisioner"
	"github.com/turnstile-dev/turnstile/provisioner/worker"
)

// provisioningDeps is what serve hands the provisioning side.
type provisioningDeps struct {
	NC           *nats.Conn
	Store        *events.Store
	Client       *client.Client
	Provisioner  provisioner.Provisioner
	Installation string
	Logger       *slog.Logger
	Registry     prometheus.Registerer
	Deadlines    map[fsm.Status]time.Duration
	// MaxActions bounds the provisioner actions running at once (0: the
	// worker's default).
	MaxActions int
	// Secrets resolves secret://NAME env references at provision time.
	Secrets worker.Resolver
}

// engineDurable is the engine's durable consumer on the command and system
// streams (engine.Config's default).
const engineDurable = events.DefaultEngineDurable

// workerDurable is the name of the worker's durable consumer on the event
// stream; the embedded NATS's user role may not touch it.
func workerDurable(installation string) string { return "turnstile-worker-" + installation }

// opener is the Open/Close shape of the worker, supervisor and watcher.
type opener interface {
	Open(context.Context) error
	Close() error
}

// startProvisioning starts the provisioner worker, supervisor and watcher for
// serve. It returns a stop function that closes them in reverse order.
func startProvisioning(ctx context.Context, d provisioningDeps) (stop func(), err error) {
	metrics := worker.NewMetrics(d.Registry)
	w, err := worker.New(worker.Config{Store: d.Store, Provisioner: d.Provisioner, Publisher: d.Client,
		Durable: workerDurable(d.Installation), Logger: d.Logger, Metrics: metrics,
		MaxConcurrentActions: d.MaxActions, Secrets: d.Secrets})
	if err != nil {
		return nil, err
	}
	sup, err := worker.NewSupervisor(worker.SupervisorConfig{Store: d.Store, Provisioner: d.Provisioner, Publisher: d.Client,
		Deadlines: d.Deadlines, Logger: d.Logger, Metrics: metrics})
	if err != nil {
		return nil, err
	}
	wat, err := worker.NewWatcher(worker.WatcherConfig{Store: d.Store, Provisioner: d.Provisioner, Publisher: d.Client,
		Logger: d.Logger, Metrics: metrics})
	if err != nil {
		return nil, err
	}
	var started []opener
	stop = func() {
		for i := len(started) - 1; i >= 0; i-- {
			_ = started[i].Close()
		}
	}
	for _, o := range []opener{w, sup, wat} {
		if err := o.Open(ctx); err != nil {
			stop()
			return nil, fmt.Errorf("start provisioning: %w", err)
		}
		started = append(started, o)
	}
	return stop, nil
}
