package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/turnstile-dev/turnstile/internal/atomicfile"
	"github.com/turnstile-dev/turnstile/internal/pgserver"
)

// database is the read model's PostgreSQL: one given by --database-url, or
// a local one serve started and stops.
//
// A local one is used through its roles (pgroles.go): migrations as the
// owner, the projector as the writer, the API's reads as the API role. The
// reader's URL goes to <data-dir>/database-url (get, list, psql), the
// owner's to <data-dir>/database-owner-url (migrate, rebuild); both 0600.
// A given URL is used for everything.
type database struct {
	// readerURL is what serve's own reads use: on a local server the API
	// role's URL, not database-url's.
	readerURL, writerURL, ownerURL string
	superURL                       string           // local only
	srv                            *pgserver.Server // nil when given by URL
	urlFile, ownerFile             string
}

// openDatabase returns the given URL, or starts a local PostgreSQL in
// <dataDir>/postgres, sets up its roles and writes their URL files.
func openDatabase(ctx context.Context, url, dataDir string, c serveConfig, log *slog.Logger) (*database, error) {
	if url != "" {
		return &database{readerURL: url, writerURL: url, ownerURL: url}, nil
	}
	dir := filepath.Join(dataDir, "postgres")
	srv, err := pgserver.Start(ctx, pgserver.Options{Dir: dir, Port: c.postgresPort, BinDir: c.postgresBinDir,
		Logger: log.With("component", "postgres")})
	if err != nil {
		return nil, fmt.Errorf("no --database-url was given, so serve starts its own PostgreSQL in %s, but: %w\n"+
			"Install the PostgreSQL server (Debian: apt-get install postgresql-15), point --postgres-bin-dir at its binaries, "+
			"or pass --database-url postgres://... (TURNSTILE_DATABASE_URL) to use an existing server", dir, err)
	}
	d := &database{srv: srv, urlFile: filepath.Join(dataDir, databaseURLFile), ownerFile: filepath.Join(dataDir, databaseOwnerURLFile)}
	fail := func(err error) (*database, error) {
		_ = d.close(context.WithoutCancel(ctx))
		return nil, err
	}
	const db = "turnstile"
	if err := srv.CreateDatabase(ctx, db); err != nil {
		return fail(err)
	}
	pw, err := newRolePasswords()
	if err != nil {
		return fail(err)
	}
	d.superURL = srv.URL(db)
	// Also takes over a database from before the roles, whose tables the
	// superuser owns, and rewrites its superuser database-url below.
	if err := setupRoles(ctx, d.superURL, db, pw); err != nil {
		return fail(err)
	}
	d.ownerURL, d.writerURL, d.readerURL = srv.URLFor(roleOwner, pw.owner, db), srv.URLFor(roleWriter, pw.writer, db),
		srv.URLFor(roleAPI, pw.api, db)
	for path, u := range map[string]string{d.urlFile: srv.URLFor(roleReader, pw.reader, db), d.ownerFile: d.ownerURL} {
		if err := atomicfile.Write(path, []byte(u+"\n"), 0o600); err != nil {
			return fail(err)
		}
	}
	return d, nil
}

// migrated finishes the roles' grants once migrations have made the tables.
func (d *database) migrated(ctx context.Context) error {
	if d.srv == nil {
		return nil
	}
	return grantRoles(ctx, d.superURL)
}

// describe says where the database is, without its password.
func (d *database) describe() string {
	if d.srv == nil {
		return "given by --database-url"
	}
	return fmt.Sprintf("local, 127.0.0.1:%d, data in %s; read-only URL in %s, owner's in %s",
		d.srv.Port(), d.srv.Dir(), d.urlFile, d.ownerFile)
}

// close stops a local server and removes its URL files.
func (d *database) close(ctx context.Context) error {
	if d.srv == nil {
		return nil
	}
	for _, f := range []string{d.urlFile, d.ownerFile} {
		if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	return d.srv.Stop(ctx)
}
