package projector_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/projector"
)

// TestPipeline covers two batches in flight at once: the next batch's rows
// are written while the one before it commits.
func TestPipeline(t *testing.T) {
	// An outcome whose event is in the batch before, and not its
	// workspace's newest, gets its event's stream sequence although that
	// batch has not committed when the outcome is written.
	t.Run("OutcomeOfEventInFlight", func(t *testing.T) {
		e := newEnv(t)
		h := history(t, e.names, "ws-pipe", []fsm.Command{{Type: fsm.Create}, {Type: fsm.ProvisionSucceeded}}, nil)
		e1, o1, e2, o2 := h[0], h[1], h[2], h[3]
		publishAll(t, e.js, e1, e2, o1, o2) // stream seqs 1-4
		var held atomic.Bool
		p := e.projectOverlapping(t, 60*time.Second, func(c *projector.Config) { c.BatchSize = 2 },
			func(b projector.BatchInfo) error {
				if b.Last != 2 {
					return fmt.Errorf("the first batch is %d-%d; the test needs 1-2", b.First, b.Last)
				}
				held.Store(true)
				return nil
			})
		if !held.Load() {
			t.Fatal("the first batch never reached its commit")
		}
		var seq *int64
		if err := e.pool.QueryRow(context.Background(), `SELECT event_stream_seq FROM commands WHERE command_id = $1`,
			"ws-pipe-a").Scan(&seq); err != nil {
			t.Fatal(err)
		}
		if seq == nil || *seq != 1 {
			t.Fatalf("the create's event_stream_seq is %v, want 1", seq)
		}
		e.assertEqualsRebuild(t, p)
	})

	// A later outcome of a command the batch in flight records is left
	// out of the next batch, not written to wait on that batch's row: the
	// first outcome counts, and neither batch waits on the other.
	t.Run("LaterOutcomeOfCommandInFlight", func(t *testing.T) {
		e := newEnv(t)
		a := history(t, e.names, "ws-first", []fsm.Command{{Type: fsm.Create}}, nil)
		b := history(t, e.names, "ws-other", []fsm.Command{{Type: fsm.Create}}, nil)
		// Stream seqs 1-4: batch 1-2 records ws-first-a; batch 3-4 has its
		// outcome again and another workspace's event.
		publishAll(t, e.js, a[0], a[1], a[1], b[0], b[1])
		var held atomic.Bool
		p := e.projectOverlapping(t, 60*time.Second, func(c *projector.Config) { c.BatchSize = 2 },
			func(b projector.BatchInfo) error {
				held.Store(b.Last == 2)
				return nil
			})
		if !held.Load() {
			t.Fatal("the first batch was not 1-2")
		}
		if n := count(t, e, `SELECT outcome_stream_seq FROM commands WHERE command_id = 'ws-first-a'`); n != 2 {
			t.Fatalf("ws-first-a's outcome is stream seq %d, want the first, 2", n)
		}
		e.assertEqualsRebuild(t, p)
	})

	// Batches of megabytes: sending the next batch must not wait for the
	// server to read it while the server waits for the batch in flight.
	t.Run("LargeRows", func(t *testing.T) {
		e := newEnv(t)
		env := map[string]string{}
		for j := range 20 {
			env[fmt.Sprintf("V%02d", j)] = strings.Repeat("y", 4000)
		}
		for i := range 600 {
			h := history(t, e.names, fmt.Sprintf("ws-%04d", i),
				[]fsm.Command{{Type: fsm.Create, Spec: &fsm.Spec{Image: "img", Env: env}}}, nil)
			publishAll(t, e.js, h...)
		}
		e.projectOverlapping(t, 90*time.Second, func(c *projector.Config) { c.BatchSize, c.BatchWait = 500, time.Second }, nil)
		if n := count(t, e, `SELECT count(*) FROM workspaces WHERE length(spec::text) > 80000`); n != 600 {
			t.Fatalf("%d workspaces with their whole spec, want 600", n)
		}
	})

	// A migration that holds one table of the read model and waits for
	// another, which the batch in flight holds: the next batch must not
	// queue behind it (the migration waits for the batch in flight, which
	// waits for us to commit it), but commit the batch in flight first.
	t.Run("MigrationWhileInFlight", func(t *testing.T) {
		e := newEnv(t)
		for _, w := range []string{"ws-a", "ws-b", "ws-c", "ws-d"} {
			publishAll(t, e.js, history(t, e.names, w, []fsm.Command{{Type: fsm.Create}}, nil)...)
		}
		var failed errorOnce
		migrated := make(chan error, 1)
		p := e.projector(t, func(c *projector.Config) {
			c.BatchSize = 2 // a new workspace in every batch: each reads workspaces
			c.Hooks.BeforeCommit = func(ctx context.Context, b projector.BatchInfo) error {
				if b.First != 1 {
					return nil
				}
				if err := waitOverlap(ctx, e.pool); err != nil {
					failed.set(err)
					return nil
				}
				go func() {
					migrated <- pgx.BeginFunc(context.Background(), e.pool, func(tx pgx.Tx) error {
						_, err := tx.Exec(context.Background(), `LOCK TABLE workspaces IN ACCESS EXCLUSIVE MODE;
							LOCK TABLE commands IN ACCESS EXCLUSIVE MODE`)
						return err
					})
				}()
				failed.set(waitQueued(ctx, e.pool, "workspaces", "the migration to wait for this batch"))
				return nil
			}
		})
		projector.Overlap(p, 2*time.Second)
		stop := run(t, p)
		select {
		case err := <-migrated:
			if err != nil {
				t.Fatalf("migration: %v", err)
			}
		case <-time.After(time.Minute):
			t.Fatal("the migration did not end")
		}
		e.waitCaughtUp(t, 60*time.Second)
		stop()
		if err := failed.get(); err != nil {
			t.Fatal(err)
		}
		e.assertEqualsRebuild(t, p)
	})

	// A rebuild's swap queues for the checkpoint table while two batches
	// are in flight: the projector must commit the one it holds rather than
	// wait behind the swap for the next, or the swap times out.
	t.Run("SwapWhileInFlight", func(t *testing.T) {
		e := newEnv(t)
		g := newGenerator(e.names, 40, 31)
		g.publish(t, e.js, 1000)
		var (
			failed  errorOnce
			once    sync.Once
			rebuilt = make(chan error, 1)
			p       *projector.Projector
		)
		p = e.projector(t, func(c *projector.Config) {
			c.BatchSize = 20
			c.Hooks.BeforeCommit = func(ctx context.Context, b projector.BatchInfo) error {
				if b.First < 200 {
					return nil
				}
				once.Do(func() {
					if err := waitOverlap(ctx, e.pool); err != nil {
						failed.set(err)
						return
					}
					go func() {
						_, err := p.Rebuild(context.Background(), nil)
						rebuilt <- err
					}()
					failed.set(waitQueued(ctx, e.pool, "projector_checkpoint", "the swap to wait for the checkpoint table"))
				})
				return nil
			}
		})
		projector.Overlap(p, 2*time.Second)
		stop := run(t, p)
		select {
		case err := <-rebuilt:
			if err != nil {
				t.Fatalf("rebuild: %v", err)
			}
		case <-time.After(2 * time.Minute):
			t.Fatal("the rebuild did not end")
		}
		if err := failed.get(); err != nil {
			t.Fatal(err)
		}
		g.publish(t, e.js, 100)
		e.waitCaughtUp(t, 60*time.Second)
		stop()
		e.assertCounts(t, g)
		e.assertEqualsRebuild(t, p)
	})
}

// projectOverlapping runs a projector configured by mod until it has
// caught up (within timeout) and stops it; the batch that starts at stream
// sequence 1 is held at its commit until the next batch's rows are
// written, after first, if set, has seen it (an error from first skips the
// wait). It fails the test on any error the hook met.
func (e *env) projectOverlapping(t *testing.T, timeout time.Duration, mod func(*projector.Config),
	first func(projector.BatchInfo) error) *projector.Projector {
	t.Helper()
	var failed errorOnce
	p := e.projector(t, func(c *projector.Config) {
		mod(c)
		c.Hooks.BeforeCommit = func(ctx context.Context, b projector.BatchInfo) error {
			if b.First != 1 {
				return nil
			}
			if first != nil {
				if err := first(b); err != nil {
					failed.set(err)
					return nil
				}
			}
			failed.set(waitOverlap(ctx, e.pool))
			return nil
		}
	})
	projector.Overlap(p, 2*time.Second)
	stop := run(t, p)
	e.waitCaughtUp(t, timeout)
	stop()
	if err := failed.get(); err != nil {
		t.Fatal(err)
	}
	return p
}

// waitOverlap waits, from BeforeCommit, until two transactions of this
// database have written and not committed: the batch committing and the
// next one, its rows written.
func waitOverlap(ctx context.Context, pool *pgxpool.Pool) error {
	return poll(ctx, 30*time.Second, "the next batch's rows to be written", func(ctx context.Context) (bool, error) {
		var n int
		err := pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND state = 'idle in transaction' AND backend_xid IS NOT NULL`).Scan(&n)
		return n >= 2, err
	})
}

// waitQueued waits until someone queues for table in ACCESS EXCLUSIVE
// mode: a swap or a migration waiting for the batches in flight.
func waitQueued(ctx context.Context, pool *pgxpool.Pool, table, what string) error {
	return poll(ctx, 60*time.Second, what, func(ctx context.Context) (bool, error) {
		var n int
		err := pool.QueryRow(ctx, `SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
			WHERE c.relname = $1 AND l.mode = 'AccessExclusiveLock' AND NOT l.granted`, table).Scan(&n)
		return n > 0, err
	})
}

// errorOnce keeps the first error set from any goroutine.
type errorOnce struct {
	mu  sync.Mutex
	err error
}

func (o *errorOnce) set(err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.err == nil {
		o.err = err
	}
}

func (o *errorOnce) get() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.err
}
