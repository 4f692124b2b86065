package pgserver_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/goleak"

	"github.com/turnstile-dev/turnstile/internal/pgserver"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// serverDir is a directory the postgres OS user can reach: t.TempDir's
// parents are private to root.
func serverDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "pgserver-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

func start(t *testing.T, o pgserver.Options) *pgserver.Server {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := pgserver.Start(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Stop(context.Background()); err != nil {
			t.Error(err)
		}
	})
	return s
}

func TestServer(t *testing.T) {
	t.Run("OK", func(t *testing.T) {
		ctx := context.Background()
		s := start(t, pgserver.Options{Dir: serverDir(t), Ephemeral: true})
		if err := s.CreateDatabase(ctx, "app"); err != nil {
			t.Fatal(err)
		}
		if err := s.CreateDatabase(ctx, "app"); err != nil {
			t.Fatalf("second create of the same database: %v", err)
		}
		conn, err := pgx.Connect(ctx, s.URL("app"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		var db, fsync string
		if err := conn.QueryRow(ctx, "SELECT current_database(), current_setting('fsync')").Scan(&db, &fsync); err != nil {
			t.Fatal(err)
		}
		if db != "app" || fsync != "off" {
			t.Fatalf("got database %q fsync %q, want app, off", db, fsync)
		}
	})

	t.Run("RestartKeepsData", func(t *testing.T) {
		ctx := context.Background()
		dir := serverDir(t)
		s, err := pgserver.Start(ctx, pgserver.Options{Dir: dir, Ephemeral: true})
		if err != nil {
			t.Fatal(err)
		}
		exec(t, s.URL("postgres"), "CREATE TABLE kept (v int); INSERT INTO kept VALUES (42)")
		port := s.Port()
		if err := s.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		select {
		case <-s.Done():
		default:
			t.Fatal("Done not closed after Stop")
		}
		if _, err := pgx.Connect(ctx, s.URL("postgres")); err == nil {
			t.Fatal("connected to a stopped server")
		}
		s2 := start(t, pgserver.Options{Dir: dir, Port: port})
		if s2.Port() != port {
			t.Fatalf("port %d, want %d", s2.Port(), port)
		}
		conn, err := pgx.Connect(ctx, s2.URL("postgres"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		var v int
		if err := conn.QueryRow(ctx, "SELECT v FROM kept").Scan(&v); err != nil || v != 42 {
			t.Fatalf("after restart: v=%d err=%v", v, err)
		}
	})

	t.Run("ErrPasswordRequired", func(t *testing.T) {
		ctx := context.Background()
		s := start(t, pgserver.Options{Dir: serverDir(t), Ephemeral: true})
		u := strings.Replace(s.URL("postgres"), "postgres:", "postgres:wrong", 1)
		if conn, err := pgx.Connect(ctx, u); err == nil {
			conn.Close(ctx)
			t.Fatal("connected with a wrong password")
		}
	})

	// issue 12 item 8: the password file is 0600 whatever was there, and
	// the password in it is the one used.
	t.Run("PasswordFileTightened", func(t *testing.T) {
		dir := serverDir(t)
		if err := os.WriteFile(dir+"/password", []byte("kept-password\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		s := start(t, pgserver.Options{Dir: dir, Ephemeral: true})
		fi, err := os.Stat(dir + "/password")
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("password file: %v %v, want mode 0600", fi.Mode(), err)
		}
		if !strings.Contains(s.URL("postgres"), ":kept-password@") {
			t.Fatalf("URL does not use the kept password")
		}
		exec(t, s.URL("postgres"), "SELECT 1")
	})

	// PostgreSQL runs as another OS user, who can read its environment in
	// /proc/<pid>/environ: it must not get the caller's secrets.
	t.Run("EnvironmentNotInherited", func(t *testing.T) {
		const secret = "api-token-0123456789-must-not-leak"
		t.Setenv("TURNSTILE_API_TOKEN", secret)
		dir := serverDir(t)
		start(t, pgserver.Options{Dir: dir, Ephemeral: true})
		pidFile, err := os.ReadFile(filepath.Join(dir, "data", "postmaster.pid"))
		if err != nil {
			t.Fatal(err)
		}
		pid, _, _ := strings.Cut(string(pidFile), "\n")
		environ, err := os.ReadFile(filepath.Join("/proc", strings.TrimSpace(pid), "environ"))
		if err != nil {
			t.Fatal(err)
		}
		vars := strings.Split(strings.TrimRight(string(environ), "\x00"), "\x00")
		if !slices.Contains(vars, "LC_ALL=C") {
			t.Fatalf("postmaster %s environment %q lacks LC_ALL=C: not read right", pid, vars)
		}
		for _, kv := range vars {
			if strings.HasPrefix(kv, "TURNSTILE_") || strings.Contains(kv, secret) {
				t.Errorf("postmaster %s has the caller's %q", pid, kv)
			}
		}
	})

	t.Run("ErrBinariesMissing", func(t *testing.T) {
		_, err := pgserver.Start(context.Background(), pgserver.Options{Dir: serverDir(t), BinDir: t.TempDir()})
		if err == nil || !strings.Contains(err.Error(), "install postgresql-15") {
			t.Fatalf("got %v, want an error telling to install postgresql-15", err)
		}
	})

	t.Run("ErrContextDone", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, err := pgserver.Start(ctx, pgserver.Options{Dir: serverDir(t), Ephemeral: true})
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("got %v, want context.Canceled", err)
		}
	})
}

func exec(t *testing.T, url, sql string) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql); err != nil {
		t.Fatal(err)
	}
}
