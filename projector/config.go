package projector

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/turnstile-dev/turnstile/events"
)

// DefaultName is the checkpoint name of the read model's projector.
const DefaultName = "read_model"

// Config wires a Projector. Store and Pool are required.
type Config struct {
	// Store is the event log the projector reads (its names locate the
	// event stream).
	Store *events.Store
	Pool  *pgxpool.Pool
	// Name keys the checkpoint row; default DefaultName.
	Name string
	// BatchSize caps the messages in one transaction; default 1000.
	BatchSize int
	// BatchWait caps how long a batch waits to fill once it has its first
	// message; default 20ms. It bounds the lag added by batching.
	BatchWait time.Duration
	// MinBackoff and MaxBackoff bound the wait after a failure; defaults
	// 50ms and 5s.
	MinBackoff, MaxBackoff time.Duration
	Logger                 *slog.Logger
	// Registerer receives the projector's metrics; nil registers nothing.
	Registerer prometheus.Registerer
	// Now is the clock; default time.Now.
	Now   func() time.Time
	Hooks Hooks
}

// Hooks let tests stop the projector at the points where a crash matters.
// Each is optional. An error aborts the session as a crash would: Run logs
// it and resumes from the checkpoint (tests usually also cancel Run's ctx).
type Hooks struct {
	// BeforeCommit runs after a batch is written, before its transaction
	// commits; an error rolls the batch back, and the next batch, which
	// may be written already, with it.
	BeforeCommit func(ctx context.Context, b BatchInfo) error
	// AfterCommit runs after the commit, before the projector commits or
	// begins another batch (the next one may be written already).
	AfterCommit func(ctx context.Context, b BatchInfo) error
}

// BatchInfo describes one batch: stream sequences First..Last.
type BatchInfo struct {
	First, Last uint64
	Events      int // envelopes
	Outcomes    int // outcome records
	Quarantined int // dead letters: messages no reader can use
	// Pending is how many messages the stream held beyond Last when Last
	// was delivered.
	Pending uint64
}

func (c *Config) setDefaults() {
	if c.Name == "" {
		c.Name = DefaultName
	}
	if c.BatchSize <= 0 {
		c.BatchSize = 1000
	}
	if c.BatchWait <= 0 {
		c.BatchWait = 20 * time.Millisecond
	}
	if c.MinBackoff <= 0 {
		c.MinBackoff = 50 * time.Millisecond
	}
	if c.MaxBackoff < c.MinBackoff {
		c.MaxBackoff = max(5*time.Second, c.MinBackoff)
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

func (c *Config) validate() error {
	switch {
	case c.Store == nil:
		return errors.New("projector: Config.Store is required")
	case c.Pool == nil:
		return errors.New("projector: Config.Pool is required")
	}
	return nil
}
