package testenv

import (
	"context"
	"fmt"
	"maps"
	"os"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/turnstile-dev/turnstile/internal/pgserver"
)

// Postgres is a throwaway PostgreSQL for tests. Unless Durable, it runs
// with fsync=off (see pgserver.Options.Ephemeral): fast, and an OS crash
// loses it, which no test cares about. Hand out one database per test with
// NewDatabase.
type Postgres struct {
	Server   *pgserver.Server
	dir      string
	port     int
	durable  bool
	settings map[string]string
	dbs      atomic.Uint64
}

// PostgresOptions tune StartPostgresWith.
type PostgresOptions struct {
	// Durable keeps fsync and synchronous commit on, as in production: for
	// benchmarks that must report both figures.
	Durable bool
	// Settings are extra server settings, over the defaults here
	// (max_connections 200): e.g. more connections for a benchmark.
	Settings map[string]string
}

// StartPostgres starts a PostgreSQL for one test and stops it when the test
// ends. Prefer one per test binary (MainWithPostgres) unless the test stops
// or restarts the server.
func StartPostgres(tb testing.TB) *Postgres {
	tb.Helper()
	return StartPostgresWith(tb, PostgresOptions{})
}

// StartPostgresWith is StartPostgres with options.
func StartPostgresWith(tb testing.TB, o PostgresOptions) *Postgres {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	p, err := newPostgres(ctx, o)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := p.Close(); err != nil {
			tb.Error(err)
		}
	})
	return p
}

// NewPostgres starts a PostgreSQL in a new temporary directory; Close stops
// it and removes the directory. For TestMain, where there is no testing.TB.
func NewPostgres(ctx context.Context) (*Postgres, error) {
	return newPostgres(ctx, PostgresOptions{})
}

func newPostgres(ctx context.Context, o PostgresOptions) (*Postgres, error) {
	// Not t.TempDir: its parents are private to root, and the server runs
	// as the postgres OS user.
	dir, err := os.MkdirTemp("", "turnstile-pg-")
	if err != nil {
		return nil, fmt.Errorf("testenv: %w", err)
	}
	p := &Postgres{dir: dir, durable: o.Durable, settings: o.Settings}
	if err := p.start(ctx); err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	return p, nil
}

func (p *Postgres) start(ctx context.Context) error {
	settings := map[string]string{"max_connections": "200"}
	maps.Copy(settings, p.settings)
	s, err := pgserver.Start(ctx, pgserver.Options{Dir: p.dir, Port: p.port, Ephemeral: !p.durable,
		Settings: settings})
	if err != nil {
		return fmt.Errorf("testenv: %w", err)
	}
	p.Server, p.port = s, s.Port()
	return nil
}

// Stop stops the server (fast shutdown) without removing its data, to
// simulate an outage; Start brings it back on the same port.
func (p *Postgres) Stop(tb testing.TB) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := p.Server.Stop(ctx); err != nil {
		tb.Fatal(err)
	}
}

// Start restarts a stopped server on its data and port.
func (p *Postgres) Start(tb testing.TB) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := p.start(ctx); err != nil {
		tb.Fatal(err)
	}
}

// Close stops the server and removes its directory.
func (p *Postgres) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := p.Server.Stop(ctx)
	if rerr := os.RemoveAll(p.dir); err == nil {
		err = rerr
	}
	return err
}

var unsafeName = regexp.MustCompile(`[^a-z0-9_]+`)

// NewDatabase creates an empty database for this test, dropped when it
// ends, and returns its URL.
func (p *Postgres) NewDatabase(tb testing.TB) string {
	tb.Helper()
	name := unsafeName.ReplaceAllString(strings.ToLower(tb.Name()), "_")
	if len(name) > 40 {
		name = name[len(name)-40:]
	}
	name = fmt.Sprintf("t%d_%s", p.dbs.Add(1), name)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := p.Server.CreateDatabase(ctx, name); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		conn, err := pgx.Connect(ctx, p.Server.URL("postgres"))
		if err != nil {
			tb.Logf("drop database %s: %v", name, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
			tb.Logf("drop database %s: %v", name, err)
		}
	})
	return p.Server.URL(name)
}

// TestingM is what goleak.VerifyTestMain and MainWithPostgres run.
type TestingM interface{ Run() int }

// MainWithPostgres wraps a package's tests with one PostgreSQL, started
// before them into *dst and stopped after:
//
//	var pg *testenv.Postgres
//	func TestMain(m *testing.M) { goleak.VerifyTestMain(testenv.MainWithPostgres(m, &pg)) }
func MainWithPostgres(m TestingM, dst **Postgres) TestingM {
	return mainFunc(func() int {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		p, err := NewPostgres(ctx)
		cancel()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		*dst = p
		code := m.Run()
		if err := p.Close(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			if code == 0 {
				code = 1
			}
		}
		return code
	})
}

type mainFunc func() int

func (f mainFunc) Run() int { return f() }
