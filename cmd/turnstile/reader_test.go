package main

import (
	"context"
	"database/sql"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/turnstile-dev/turnstile/migrations"
)

// The holder of database-url (psql, a dashboard, get and list) is given a
// read-only role; these tests hold it to having no more than that: it can
// write nothing, and it can stall neither the projector nor serve's own
// reads. Found in review.

// startLocalDatabase starts serve's local PostgreSQL in a fresh data dir
// as serve does: roles, migrations as the owner, grants. It returns the
// database and the URL a holder of database-url has.
// startLocalReader is startLocalDatabase with a session of the reader's,
// closed when the test ends.
func startLocalReader(t *testing.T, ctx context.Context) (*database, *pgx.Conn) {
	t.Helper()
	d, readerURL := startLocalDatabase(t, ctx)
	reader, err := pgx.Connect(ctx, readerURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = reader.Close(context.Background()) })
	return d, reader
}

func startLocalDatabase(t *testing.T, ctx context.Context) (*database, string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "turnstile-reader-") // reachable by the postgres OS user
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o711); err != nil { // as serve makes it
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(testWriter{t}, nil))
	d, err := openDatabase(ctx, "", dir, serveConfig{}, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := d.close(context.Background()); err != nil {
			t.Error(err)
		}
	})
	db, err := sql.Open("pgx", d.ownerURL)
	if err != nil {
		t.Fatal(err)
	}
	err = migrations.Up(ctx, db)
	_ = db.Close()
	if err != nil {
		t.Fatal(err)
	}
	if err := d.migrated(ctx); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, databaseURLFile))
	if err != nil {
		t.Fatal(err)
	}
	return d, strings.TrimSpace(string(b))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

func isPgCode(err error, codes ...string) bool {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return false
	}
	for _, c := range codes {
		if pgErr.Code == c {
			return true
		}
	}
	return false
}

// The read-only session is a default the reader may turn off
// (default_transaction_read_only is a user setting); after that, large
// objects, which need no grant to create, were writable: a reader could
// fill the disk with them.
func TestReaderWritesNothing(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	d, reader := startLocalReader(t, ctx)
	if _, err := reader.Exec(ctx, `SET default_transaction_read_only = off`); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		`SELECT lo_from_bytea(0, '\x00'::bytea)`,
		`SELECT lo_create(0)`,
		`SELECT lo_creat(-1)`,
		`CREATE TEMP TABLE mine (v int)`,
	} {
		if _, err := reader.Exec(ctx, q); !isPgCode(err, "42501") {
			t.Errorf("%s as the reader: got %v, want permission denied", q, err)
		}
	}
	super, err := pgx.Connect(ctx, d.superURL)
	if err != nil {
		t.Fatal(err)
	}
	defer super.Close(ctx)
	var n int
	if err := super.QueryRow(ctx, `SELECT count(*) FROM pg_largeobject_metadata`).Scan(&n); err != nil || n != 0 {
		t.Errorf("%d large objects (%v), want none", n, err)
	}
	// What a reader's query may spill to disk is bounded, and the bound is
	// not the reader's to lift.
	if _, err := reader.Exec(ctx, `SET temp_file_limit = -1`); !isPgCode(err, "42501") {
		t.Errorf("SET temp_file_limit as the reader: got %v, want permission denied", err)
	}
	var limit string
	if err := reader.QueryRow(ctx, `SHOW temp_file_limit`).Scan(&limit); err != nil || limit == "-1" {
		t.Errorf("the reader's temp_file_limit is %q (%v), want a bound", limit, err)
	}
}

// Connections are not guarded by any grant: a reader that opened every
// connection the server allows locked the projector (the writer) and the
// owner (migrations, rebuild) out until it let go.
func TestReaderConnectionsLeaveRoomForServe(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	d, readerURL := startLocalDatabase(t, ctx)
	var held []*pgx.Conn
	defer func() {
		for _, c := range held {
			c.Close(context.Background())
		}
	}()
	for len(held) < 200 {
		c, err := pgx.Connect(ctx, readerURL)
		if err != nil {
			if !isPgCode(err, "53300") { // too_many_connections
				t.Fatalf("reader connection %d: %v", len(held)+1, err)
			}
			break
		}
		held = append(held, c)
	}
	t.Logf("the reader holds %d connections", len(held))
	for role, u := range map[string]string{"writer": d.writerURL, "owner": d.ownerURL, "serve's reads": d.readerURL} {
		c, err := pgx.Connect(ctx, u)
		if err != nil {
			t.Errorf("%s cannot connect while the reader holds %d connections: %v", role, len(held), err)
			continue
		}
		if _, err := c.Exec(ctx, `SELECT count(*) FROM workspaces`); err != nil {
			t.Errorf("%s: %v", role, err)
		}
		c.Close(ctx)
	}
}

// A role may change its own password and session defaults (ALTER ROLE
// itself), whatever its grants. serve's own reads (the API, /metrics)
// used the role whose URL database-url hands out: its holder could
// lock serve's API out of the read model (a new password), or break every
// query it makes (statement_timeout), the latter across restarts.
func TestReaderCannotBreakServesReads(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	d, reader := startLocalReader(t, ctx)
	for _, q := range []string{
		`SET default_transaction_read_only = off`,
		`ALTER ROLE CURRENT_USER SET statement_timeout = '1ms'`,
		`ALTER ROLE CURRENT_USER IN DATABASE turnstile SET search_path = nowhere`,
		`ALTER ROLE CURRENT_USER PASSWORD 'mine'`,
	} {
		if _, err := reader.Exec(ctx, q); err != nil {
			t.Logf("%s: %v", q, err) // refused is fine too
		}
	}
	c, err := pgx.Connect(ctx, d.readerURL)
	if err != nil {
		t.Fatalf("serve's reads cannot connect after the holder of database-url changed its role: %v", err)
	}
	defer c.Close(ctx)
	var n int
	if err := c.QueryRow(ctx, `SELECT count(*) FROM workspaces, pg_sleep(0.01)`).Scan(&n); err != nil {
		t.Errorf("serve's reads fail after the holder of database-url changed its role: %v", err)
	}
}
