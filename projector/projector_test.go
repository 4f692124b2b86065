package projector_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/internal/testenv"
	"github.com/turnstile-dev/turnstile/projector"
)

func TestProjector(t *testing.T) {
	t.Run("CatchesUp", func(t *testing.T) {
		e := newEnv(t)
		g := newGenerator(e.names, 50, 1)
		g.publish(t, e.js, 2000)
		p := e.projector(t, nil)
		stop := run(t, p)
		e.stopCaughtUp(t, g, p, stop, 30*time.Second)
	})

	t.Run("KillBeforeCommit", func(t *testing.T) {
		e := newEnv(t)
		g := newGenerator(e.names, 30, 2)
		g.publish(t, e.js, 500)
		killed := runKilled(t, e, func(c *projector.Config, h hook) { c.Hooks.BeforeCommit = h })
		cp, err := e.checkpoint(context.Background())
		if err != nil || cp != killed.First-1 {
			t.Fatalf("checkpoint %d (err %v), want %d: the killed batch must not count", cp, err, killed.First-1)
		}
		if n := count(t, e, "SELECT count(*) FROM workspace_events WHERE stream_seq >= $1", killed.First); n != 0 {
			t.Fatalf("%d events of the killed batch were kept", n)
		}
		e.restartAndCompare(t, g)
	})

	t.Run("KillAfterCommit", func(t *testing.T) {
		e := newEnv(t)
		g := newGenerator(e.names, 30, 3)
		g.publish(t, e.js, 500)
		killed := runKilled(t, e, func(c *projector.Config, h hook) { c.Hooks.AfterCommit = h })
		cp, err := e.checkpoint(context.Background())
		if err != nil || cp != killed.Last {
			t.Fatalf("checkpoint %d (err %v), want %d: the committed batch must count", cp, err, killed.Last)
		}
		e.restartAndCompare(t, g)
	})

	t.Run("TwoProjectorsOneDatabase", func(t *testing.T) {
		e := newEnv(t)
		g := newGenerator(e.names, 40, 4)
		small := func(c *projector.Config) { c.BatchSize = 20 }
		p1, p2 := e.projector(t, small), e.projector(t, small)
		stop1 := run(t, p1)
		run(t, p2)
		g.publish(t, e.js, 1500)
		e.waitCaughtUp(t, 60*time.Second)
		// One writes at a time; when it stops, the other takes over.
		stop1()
		g.publish(t, e.js, 500)
		e.stopCaughtUp(t, g, p1, nil, 60*time.Second)
	})

	// The projector applies messages past the rebuild's end while the
	// rebuild builds; after the swap it must resume from the rebuild's
	// checkpoint, not from where it was.
	t.Run("RebuildWhileRunning", func(t *testing.T) {
		e := newEnv(t)
		g := newGenerator(e.names, 40, 5)
		g.publish(t, e.js, 1000)
		p := e.projector(t, func(c *projector.Config) { c.BatchSize = 50 })
		stop := run(t, p)
		e.waitCaughtUp(t, 30*time.Second)
		read, proceed := make(chan struct{}), make(chan struct{})
		rebuilt := make(chan error, 1)
		var stats projector.RebuildStats
		go func() {
			var err error
			stats, err = p.Rebuild(context.Background(), func(pr projector.Progress) {
				if pr.Phase == "index" {
					close(read)
					<-proceed
				}
			})
			rebuilt <- err
		}()
		<-read
		g.publish(t, e.js, 1000)
		e.waitCaughtUp(t, 30*time.Second)
		ahead := e.streamLast(t)
		close(proceed)
		if err := <-rebuilt; err != nil {
			t.Fatal(err)
		}
		if stats.Through >= ahead {
			t.Fatalf("rebuild went through %d, the projector was at %d: the test needs it behind", stats.Through, ahead)
		}
		g.publish(t, e.js, 200)
		e.stopCaughtUp(t, g, p, stop, 30*time.Second)
	})

	t.Run("PostgresRestart", func(t *testing.T) {
		own := testenv.StartPostgres(t)
		e := newEnvOn(t, own, events.StreamOptions{})
		g := newGenerator(e.names, 30, 6)
		reg := prometheus.NewRegistry()
		p := e.projector(t, func(c *projector.Config) { c.Registerer = reg })
		stop := run(t, p)
		g.publish(t, e.js, 300)
		e.waitCaughtUp(t, 30*time.Second)
		own.Stop(t)
		g.publish(t, e.js, 300)
		waitFor(t, 30*time.Second, "the projector to notice the outage", func(context.Context) (bool, error) {
			return metric(t, reg, "turnstile_projector_errors_total") > 0, nil
		})
		own.Start(t)
		e.stopCaughtUp(t, g, p, stop, 30*time.Second)
	})

	t.Run("Lag", func(t *testing.T) {
		e := newEnv(t)
		g := newGenerator(e.names, 20, 7)
		g.publish(t, e.js, 300)
		reg := prometheus.NewRegistry()
		p := e.projector(t, func(c *projector.Config) { c.Registerer = reg })
		ctx := context.Background()
		last := e.streamLast(t)
		l, err := p.Lag(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if l.Checkpoint != 0 || l.StreamLast != last || l.Messages != last || l.Behind <= 0 {
			t.Fatalf("before running: %+v, want all %d messages behind", l, last)
		}
		if got := metric(t, reg, "turnstile_projector_lag_messages"); got != float64(last) {
			t.Fatalf("lag_messages gauge %v, want %d", got, last)
		}
		stop := run(t, p)
		e.waitCaughtUp(t, 30*time.Second)
		stop()
		if l, err = p.Lag(ctx); err != nil {
			t.Fatal(err)
		}
		if l.Messages != 0 || l.Behind != 0 || l.Checkpoint != last || l.LastApplied.IsZero() {
			t.Fatalf("caught up: %+v, want no lag at %d", l, last)
		}
		for name, want := range map[string]float64{
			"turnstile_projector_lag_messages": 0, "turnstile_projector_checkpoint": float64(last),
			"turnstile_projector_messages_total": float64(last),
		} {
			if got := metric(t, reg, name); got != want {
				t.Errorf("%s = %v, want %v", name, got, want)
			}
		}
	})

	t.Run("ErrRegisteredTwice", func(t *testing.T) {
		e := newEnv(t)
		reg := prometheus.NewRegistry()
		e.projector(t, func(c *projector.Config) { c.Registerer = reg })
		_, err := projector.New(projector.Config{Store: e.store, Pool: e.pool, Registerer: reg})
		if err == nil {
			t.Fatal("a second projector of the same name registered its metrics")
		}
	})
}

func TestGetWorkspace(t *testing.T) {
	e := newEnv(t)
	g := newGenerator(e.names, 10, 8)
	g.publish(t, e.js, 300)
	p := e.projector(t, nil)
	stop := run(t, p)
	e.waitCaughtUp(t, 30*time.Second)
	stop()
	ctx := context.Background()

	t.Run("OK", func(t *testing.T) {
		for id, want := range g.states {
			got, err := projector.GetWorkspace(ctx, e.pool, id)
			if err != nil {
				t.Fatal(err)
			}
			if got.Generation != want.Generation || got.LastEventSeq != want.Seq || got.Status != want.Status ||
				got.SpecVersion != want.SpecVersion || !got.Spec.Equal(want.Spec) || got.LastError != want.LastError ||
				got.ContainerID != want.ContainerID {
				t.Fatalf("%s: read model %+v, want state %+v", id, got, want)
			}
			if got.LastStreamSeq == 0 || got.CreatedAt.IsZero() || got.UpdatedAt.Before(got.CreatedAt) {
				t.Fatalf("%s: bad positions or times: %+v", id, got)
			}
		}
	})

	t.Run("ErrNotFound", func(t *testing.T) {
		_, err := projector.GetWorkspace(ctx, e.pool, "never-created")
		if !errors.Is(err, projector.ErrNotFound) {
			t.Fatalf("got %v, want ErrNotFound", err)
		}
	})
}

func (e *env) restartAndCompare(t *testing.T, g *generator) {
	t.Helper()
	p := e.projector(t, func(c *projector.Config) { c.BatchSize = 50 })
	e.stopCaughtUp(t, g, p, run(t, p), 30*time.Second)
}

// stopCaughtUp waits within for the read model to catch up with the
// stream, stops p (stop, unless nil) and checks the read model: every
// message of g once, and equal to a rebuild.
func (e *env) stopCaughtUp(t *testing.T, g *generator, p *projector.Projector, stop func(), within time.Duration) {
	t.Helper()
	e.waitCaughtUp(t, within)
	if stop != nil {
		stop()
	}
	e.assertCounts(t, g)
	e.assertEqualsRebuild(t, p)
}

// assertCounts checks that every event and every outcome is there once.
func (e *env) assertCounts(t *testing.T, gs ...*generator) {
	t.Helper()
	want := sum(gs...)
	if n := count(t, e, "SELECT count(*) FROM workspace_events"); n != want.events {
		t.Fatalf("workspace_events has %d rows, want %d", n, want.events)
	}
	if n := count(t, e, "SELECT count(*) FROM commands"); n != want.commands {
		t.Fatalf("commands has %d rows, want %d", n, want.commands)
	}
	if n := count(t, e, "SELECT count(*) FROM workspaces"); n != want.workspaces {
		t.Fatalf("workspaces has %d rows, want %d", n, want.workspaces)
	}
	if n := count(t, e, "SELECT count(*) FROM commands WHERE outcome = 'accepted' AND event_stream_seq IS NULL"); n != 0 {
		t.Fatalf("%d accepted commands lack their event", n)
	}
}

func count(t *testing.T, e *env, q string, args ...any) int {
	t.Helper()
	var n int
	if err := e.pool.QueryRow(context.Background(), q, args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// metric reads a gauge or counter (the sum over its series) from reg.
func metric(t testing.TB, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var v float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			switch {
			case m.GetGauge() != nil:
				v += m.GetGauge().GetValue()
			case m.GetCounter() != nil:
				v += m.GetCounter().GetValue()
			}
		}
	}
	return v
}

// hook is a projector.Hooks function.
type hook = func(context.Context, projector.BatchInfo) error

// runKilled runs a projector with batches of 50 until the hook that set
// installs kills it at its third batch (cancels the run and fails), and
// returns that batch.
func runKilled(t *testing.T, e *env, set func(*projector.Config, hook)) projector.BatchInfo {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var killed projector.BatchInfo
	batches := 0
	p := e.projector(t, func(c *projector.Config) {
		c.BatchSize = 50
		set(c, func(_ context.Context, b projector.BatchInfo) error {
			if batches++; batches == 3 {
				killed = b
				cancel()
				return errors.New("killed")
			}
			return nil
		})
	})
	if err := p.Run(ctx); err != nil {
		t.Fatal(err)
	}
	return killed
}
