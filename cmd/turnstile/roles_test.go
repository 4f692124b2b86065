package main

import (
	"context"
	"database/sql"
	"errors"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"

	"github.com/turnstile-dev/turnstile/internal/pgserver"
	"github.com/turnstile-dev/turnstile/internal/testenv"
	"github.com/turnstile-dev/turnstile/migrations"
)

// issue 12 item 8: serve's local PostgreSQL was used as the superuser by
// everything, and database-url (the superuser's URL) kept an existing
// file's mode. Now database-url is a read-only role's URL, written 0600
// whatever was there; migrate and rebuild use the owner's URL from
// database-owner-url; the projector writes as a role that can only change
// rows. A data dir of the superuser days (tables owned by the superuser,
// a 0644 database-url) is taken over at start.
func TestServeDatabaseRoles(t *testing.T) {
	dir, err := os.MkdirTemp("", "turnstile-roles-") // reachable by the postgres OS user
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o711); err != nil { // as serve makes it
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	// The data dir as the serve of before left it.
	old, err := pgserver.Start(ctx, pgserver.Options{Dir: filepath.Join(dir, "postgres")})
	if err != nil {
		t.Fatal(err)
	}
	if err := old.CreateDatabase(ctx, "turnstile"); err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("pgx", old.URL("turnstile"))
	if err != nil {
		t.Fatal(err)
	}
	if err := migrations.Up(ctx, db); err != nil {
		t.Fatal(err)
	}
	_ = db.Close()
	urlFile := filepath.Join(dir, "database-url")
	if err := os.WriteFile(urlFile, []byte(old.URL("turnstile")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := old.Stop(ctx); err != nil {
		t.Fatal(err)
	}

	n := testenv.StartNATS(t, testenv.NATSOptions{})
	env := map[string]string{"TURNSTILE_DATA_DIR": dir, "TURNSTILE_NATS_URL": n.URL}
	serveCtx, stopServe := context.WithCancel(context.Background())
	var serveErr lockedBuffer
	served := make(chan int, 1)
	go func() {
		served <- run(serveCtx, []string{"serve", "--provisioner", "sim", "--http-addr", "127.0.0.1:0", "--sim-min-latency", "1ms", "--sim-max-latency", "5ms"},
			streams{in: strings.NewReader(""), out: &serveErr, err: &serveErr}, func(k string) string { return env[k] })
	}()
	t.Cleanup(func() {
		stopServe()
		if code := <-served; code != 0 {
			t.Errorf("serve exited %d:\n%s", code, serveErr.String())
		}
	})

	var reader *pgx.Conn
	testenv.Eventually(t, 2*time.Minute, "serve to write a working database-url", func() bool {
		select {
		case code := <-served:
			served <- code
			t.Fatalf("serve exited %d:\n%s", code, serveErr.String())
		default:
		}
		b, err := os.ReadFile(urlFile)
		if err != nil {
			return false
		}
		c, err := pgx.Connect(ctx, strings.TrimSpace(string(b)))
		if err != nil {
			return false
		}
		if _, err := c.Exec(ctx, "SELECT 1 FROM workspaces LIMIT 1"); err != nil {
			c.Close(ctx)
			return false
		}
		reader = c
		return true
	})
	defer reader.Close(ctx)

	for file, role := range map[string]string{"database-url": "turnstile_reader", "database-owner-url": "turnstile_owner"} {
		path := filepath.Join(dir, file)
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", file, fi.Mode().Perm())
		}
		b, _ := os.ReadFile(path)
		u, err := url.Parse(strings.TrimSpace(string(b)))
		if err != nil || u.User.Username() != role {
			t.Errorf("%s is for %v (%v), want role %s", file, u.User, err, role)
		}
	}

	// The reader reads and can do nothing else.
	refused := func(conn *pgx.Conn, q string) {
		t.Helper()
		_, err := conn.Exec(ctx, q)
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || (pgErr.Code != "42501" && pgErr.Code != "25006") {
			t.Errorf("%q: got %v, want insufficient privilege or read-only", q, err)
		}
	}
	refused(reader, `INSERT INTO projector_checkpoint (name, stream_seq, updated_at) VALUES ('x', 1, now())`)
	refused(reader, `UPDATE workspaces SET status = 'deleted'`)
	refused(reader, `CREATE TABLE mine (v int)`)
	refused(reader, `SELECT pg_advisory_lock(42)`)
	refused(reader, `SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE; DELETE FROM commands`)
	var owners string
	if err := reader.QueryRow(ctx, `SELECT string_agg(DISTINCT tableowner, ',') FROM pg_tables WHERE schemaname = 'public'`).Scan(&owners); err != nil || owners != "turnstile_owner" {
		t.Errorf("tables owned by %q (%v), want turnstile_owner alone", owners, err)
	}

	// The projector (the writer) keeps the read model current, also after
	// a rebuild (the owner) has swapped in tables it created.
	projected := func(id string) {
		t.Helper()
		if code, out, errs := runCLI(t, env, "create", id); code != 0 {
			t.Fatalf("create %s: exit %d\n%s%s", id, code, out, errs)
		}
		testenv.Eventually(t, time.Minute, id+" in the read model", func() bool {
			var n int
			return reader.QueryRow(ctx, `SELECT count(*) FROM workspaces WHERE id = $1`, id).Scan(&n) == nil && n == 1
		})
	}
	projected("before-rebuild")
	if code, out, errs := runCLI(t, env, "migrate", "status"); code != 0 || !strings.Contains(out, "00001") {
		t.Fatalf("migrate status: exit %d\n%s%s", code, out, errs)
	}
	if code, out, errs := runCLI(t, env, "rebuild"); code != 0 {
		t.Fatalf("rebuild: exit %d\n%s%s", code, out, errs)
	}
	projected("after-rebuild")
	if code, out, errs := runCLI(t, env, "get", "after-rebuild"); code != 0 {
		t.Fatalf("get: exit %d\n%s%s", code, out, errs)
	}
}
