package read_test

import (
	"context"
	"database/sql"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"go.uber.org/goleak"

	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/internal/testenv"
	"github.com/turnstile-dev/turnstile/migrations"
	"github.com/turnstile-dev/turnstile/projector"
	"github.com/turnstile-dev/turnstile/read"
)

var pg *testenv.Postgres

func TestMain(m *testing.M) { goleak.VerifyTestMain(testenv.MainWithPostgres(m, &pg)) }

// queryCounter counts the statements a pool sends.
type queryCounter struct{ n atomic.Int64 }

func (c *queryCounter) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	c.n.Add(1)
	return ctx
}

func (c *queryCounter) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// readModel is a migrated, empty read model and a pool on it whose
// statements are counted.
func readModel(t *testing.T) (*pgxpool.Pool, *queryCounter) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	url := pg.NewDatabase(t)
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	qc := &queryCounter{}
	cfg.ConnConfig.Tracer = qc
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	db := stdlib.OpenDBFromPool(pool)
	defer func(db *sql.DB) { _ = db.Close() }(db)
	if err := migrations.Up(ctx, db); err != nil {
		t.Fatal(err)
	}
	return pool, qc
}

// fill inserts n workspaces ws-00000 … with every third one stopped, the
// rest running, and the projector's checkpoint at stream sequence cp.
func fill(t *testing.T, pool *pgxpool.Pool, n int, cp uint64) {
	t.Helper()
	ctx := context.Background()
	_, err := pool.Exec(ctx, `INSERT INTO workspaces (id, status, generation, spec_version, attempt_spec_version, spec,
		last_event_seq, last_stream_seq, created_at, updated_at, status_changed_at)
		SELECT format('ws-%s', lpad(i::text, 5, '0')), CASE WHEN i % 3 = 0 THEN 'stopped' ELSE 'running' END,
			1, 1, 1, '{"image":"img"}', 2, i * 2, now(), now(), now()
		FROM generate_series(0, $1 - 1) AS i`, n)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO projector_checkpoint (name, stream_seq, updated_at) VALUES ($1, $2, now())`,
		projector.DefaultName, cp); err != nil {
		t.Fatal(err)
	}
}

func TestListWorkspaces(t *testing.T) {
	pool, qc := readModel(t)
	ctx := context.Background()

	t.Run("Empty", func(t *testing.T) {
		l, err := read.ListWorkspaces(ctx, pool, read.ListOptions{})
		if err != nil || len(l.Workspaces) != 0 || l.Next != "" || l.Checkpoint != 0 || l.Workspaces == nil {
			t.Fatalf("empty read model: %+v, %v", l, err)
		}
	})

	const n = 1001
	fill(t, pool, n, 5000)

	t.Run("PastOneThousandOneQueryPerPage", func(t *testing.T) {
		var ids []string
		o := read.ListOptions{Limit: read.MaxListLimit}
		pages := 0
		for {
			before := qc.n.Load()
			l, err := read.ListWorkspaces(ctx, pool, o)
			if err != nil {
				t.Fatal(err)
			}
			if q := qc.n.Load() - before; q != 1 {
				t.Fatalf("page %d took %d statements, want 1", pages, q)
			}
			if l.Checkpoint != 5000 {
				t.Fatalf("checkpoint %d, want 5000", l.Checkpoint)
			}
			pages++
			for _, w := range l.Workspaces {
				ids = append(ids, w.ID)
			}
			if l.Next == "" {
				break
			}
			if l.Next != l.Workspaces[len(l.Workspaces)-1].ID {
				t.Fatalf("next %q is not the page's last id %q", l.Next, l.Workspaces[len(l.Workspaces)-1].ID)
			}
			o.After = l.Next
		}
		if pages != 2 || len(ids) != n || ids[0] != "ws-00000" || ids[n-1] != fmt.Sprintf("ws-%05d", n-1) {
			t.Fatalf("%d pages, %d ids (%v … %v), want 2 pages of %d", pages, len(ids), ids[0], ids[len(ids)-1], n)
		}
		for i := 1; i < len(ids); i++ {
			if ids[i] <= ids[i-1] {
				t.Fatalf("ids out of order or repeated: %s after %s", ids[i], ids[i-1])
			}
		}
	})

	t.Run("Row", func(t *testing.T) {
		l, err := read.ListWorkspaces(ctx, pool, read.ListOptions{After: "ws-00006", Limit: 1})
		if err != nil {
			t.Fatal(err)
		}
		w := l.Workspaces[0]
		if len(l.Workspaces) != 1 || w.ID != "ws-00007" || w.Status != "running" || w.Generation != 1 || w.Spec.Image != "img" ||
			w.EventSeq != 2 || w.StreamSeq != 14 || w.Source != read.SourceReadModel || w.CreatedAt == nil || l.Next != "ws-00007" {
			t.Fatalf("one row after ws-00006: %+v", l)
		}
	})

	t.Run("Status", func(t *testing.T) {
		l, err := read.ListWorkspaces(ctx, pool, read.ListOptions{Status: fsm.Stopped, Limit: 2})
		if err != nil {
			t.Fatal(err)
		}
		if len(l.Workspaces) != 2 || l.Workspaces[0].ID != "ws-00000" || l.Workspaces[1].ID != "ws-00003" || l.Next != "ws-00003" {
			t.Fatalf("stopped, 2: %+v", l)
		}
	})

	t.Run("Counts", func(t *testing.T) {
		c, err := read.CountByStatus(ctx, pool)
		if err != nil {
			t.Fatal(err)
		}
		if c[fsm.Stopped] != 334 || c[fsm.Running] != 667 || c[fsm.Failed] != 0 {
			t.Fatalf("counts %v", c)
		}
		if _, ok := c[fsm.Deleted]; !ok {
			t.Fatalf("counts %v lack deleted at 0", c)
		}
	})
}
