package migrations_test

import (
	"context"
	"database/sql"
	"slices"
	"testing"

	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"
	"go.uber.org/goleak"

	"github.com/turnstile-dev/turnstile/internal/testenv"
	"github.com/turnstile-dev/turnstile/migrations"
)

var pg *testenv.Postgres

func TestMain(m *testing.M) { goleak.VerifyTestMain(testenv.MainWithPostgres(m, &pg)) }

func openDB(t *testing.T) *sql.DB {
	t.Helper()
	db, err := sql.Open("pgx", pg.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

func TestUp(t *testing.T) {
	ctx := context.Background()

	t.Run("OK", func(t *testing.T) {
		db := openDB(t)
		if pending, err := migrations.Pending(ctx, db); err != nil || !pending {
			t.Fatalf("fresh database: pending=%v err=%v, want pending", pending, err)
		}
		if err := migrations.Up(ctx, db); err != nil {
			t.Fatal(err)
		}
		if err := migrations.Up(ctx, db); err != nil {
			t.Fatalf("second Up: %v", err)
		}
		st, err := migrations.Status(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		if len(st) == 0 {
			t.Fatal("no migrations known")
		}
		for _, m := range st {
			if !m.Applied || m.AppliedAt.IsZero() {
				t.Errorf("migration %d %s not applied", m.Version, m.Name)
			}
		}
		if pending, err := migrations.Pending(ctx, db); err != nil || pending {
			t.Fatalf("after Up: pending=%v err=%v", pending, err)
		}
	})

	t.Run("Schema", func(t *testing.T) {
		db := openDB(t)
		if err := migrations.Up(ctx, db); err != nil {
			t.Fatal(err)
		}
		want := map[string][]string{
			"workspaces": {"id", "status", "generation", "spec_version", "spec", "image", "container_id",
				"last_error", "last_event_seq", "last_stream_seq", "created_at", "updated_at", "deleted_at"},
			"workspace_events": {"stream_seq", "workspace_id", "seq", "type", "generation", "spec_version",
				"payload", "from_status", "to_status", "command_id", "actor", "time"},
			"commands": {"command_id", "workspace_id", "type", "actor", "received_at", "decided_at", "outcome",
				"rejection_code", "rejection_message", "reason", "event_stream_seq", "generation", "command_generation"},
			"projector_checkpoint": {"name", "stream_seq", "updated_at"},
		}
		for table, cols := range want {
			got := strings(t, db, `SELECT column_name FROM information_schema.columns
				WHERE table_schema = current_schema() AND table_name = $1`, table)
			for _, c := range cols {
				if !slices.Contains(got, c) {
					t.Errorf("%s lacks column %s", table, c)
				}
			}
		}
		idx := strings(t, db, `SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()`)
		for _, name := range []string{"workspaces_status_idx", "workspaces_updated_idx",
			"workspace_events_workspace_time_idx", "workspace_events_type_time_idx",
			"commands_workspace_idx", "commands_outcome_idx"} {
			if !slices.Contains(idx, name) {
				t.Errorf("index %s missing", name)
			}
		}
	})
}

func strings(t *testing.T, db *sql.DB, q string, args ...any) []string {
	t.Helper()
	rows, err := db.QueryContext(context.Background(), q, args...)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}
