package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/turnstile-dev/turnstile/internal/pgserver"
)

// database is the read model's PostgreSQL: one given by --database-url, or
// a local one serve started and stops.
type database struct {
	url     string
	srv     *pgserver.Server // nil when given by URL
	urlFile string
}

// openDatabase returns the given URL, or starts a local PostgreSQL in
// <dataDir>/postgres and writes its URL to <dataDir>/database-url.
func openDatabase(ctx context.Context, url, dataDir string, c serveConfig, log *slog.Logger) (*database, error) {
	if url != "" {
		return &database{url: url}, nil
	}
	dir := filepath.Join(dataDir, "postgres")
	srv, err := pgserver.Start(ctx, pgserver.Options{Dir: dir, Port: c.postgresPort, BinDir: c.postgresBinDir,
		Logger: log.With("component", "postgres")})
	if err != nil {
		return nil, fmt.Errorf("no --database-url was given, so serve starts its own PostgreSQL in %s, but: %w\n"+
			"Install the PostgreSQL server (Debian: apt-get install postgresql-15), point --postgres-bin-dir at its binaries, "+
			"or pass --database-url postgres://... (TURNSTILE_DATABASE_URL) to use an existing server", dir, err)
	}
	d := &database{srv: srv, urlFile: filepath.Join(dataDir, databaseURLFile)}
	if err := srv.CreateDatabase(ctx, "turnstile"); err != nil {
		d.close(context.WithoutCancel(ctx))
		return nil, err
	}
	d.url = srv.URL("turnstile")
	if err := os.WriteFile(d.urlFile, []byte(d.url+"\n"), 0o600); err != nil {
		d.close(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("write %s: %w", d.urlFile, err)
	}
	return d, nil
}

// describe says where the database is, without its password.
func (d *database) describe() string {
	if d.srv == nil {
		return "given by --database-url"
	}
	return fmt.Sprintf("local, 127.0.0.1:%d, data in %s; URL in %s", d.srv.Port(), d.srv.Dir(), d.urlFile)
}

// close stops a local server and removes its URL file.
func (d *database) close(ctx context.Context) error {
	if d.srv == nil {
		return nil
	}
	if d.urlFile != "" {
		if err := os.Remove(d.urlFile); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	return d.srv.Stop(ctx)
}
