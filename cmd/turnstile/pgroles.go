package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strconv"

	"github.com/jackc/pgx/v5"
)

// The roles serve creates on its local PostgreSQL (issue 12 item 8): no
// part of Turnstile, and no reader of database-url, uses the superuser.
const (
	// roleOwner owns the database, its schemas and tables: migrations and
	// rebuild (which creates, moves and drops tables) run as it.
	roleOwner = "turnstile_owner"
	// roleWriter is the projector: DML on the read model's tables only.
	roleWriter = "turnstile_writer"
	// roleReader is whoever holds database-url (get, list, psql): SELECT
	// only, read-only transactions.
	roleReader = "turnstile_reader"
	// roleAPI is serve's own reads (the API, the metrics): as the reader,
	// but its password is in no file. A role may change its own password
	// and session defaults whatever its grants, so the holder of
	// database-url could otherwise lock serve's API out of the read model.
	roleAPI = "turnstile_api"
)

// readerTempFileLimit bounds the temporary files one reader session may
// write (a sort or hash that spills): enough for any query of the read
// model, not enough to fill the disk PostgreSQL needs to keep writing.
const readerTempFileLimit = "1GB"

// readerConnLimit bounds the reader's connections. No grant guards
// connections: a reader holding all the server allows (100, 3 of them the
// superuser's) would lock the projector, serve's reads and migrations out.
// This leaves them 33.
const readerConnLimit = 64

// rolePasswords are the roles' passwords, new at every start of serve.
type rolePasswords struct{ owner, writer, reader, api string }

func newRolePasswords() (rolePasswords, error) {
	var p rolePasswords
	for _, pw := range []*string{&p.owner, &p.writer, &p.reader, &p.api} {
		raw := make([]byte, 24)
		if _, err := rand.Read(raw); err != nil {
			return p, fmt.Errorf("role password: %w", err)
		}
		*pw = hex.EncodeToString(raw)
	}
	return p, nil
}

// setupRoles creates or updates the roles (passwords set anew), and
// gives the database and everything in it to the owner: a database made
// before the roles existed, whose tables the superuser owns, is taken over
// the same way. superURL connects to database db as the superuser.
func setupRoles(ctx context.Context, superURL, db string, pw rolePasswords) error {
	conn, err := pgx.Connect(ctx, superURL)
	if err != nil {
		return fmt.Errorf("roles: connect as the superuser: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	dbID := pgx.Identifier{db}.Sanitize()
	// Utility statements take no parameters; the passwords are hex.
	stmts := []string{`DO $$ BEGIN
		IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '` + roleOwner + `') THEN CREATE ROLE ` + roleOwner + `; END IF;
		IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '` + roleWriter + `') THEN CREATE ROLE ` + roleWriter + `; END IF;
		IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '` + roleReader + `') THEN CREATE ROLE ` + roleReader + `; END IF;
		IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '` + roleAPI + `') THEN CREATE ROLE ` + roleAPI + `; END IF;
	END $$`,
		`ALTER ROLE ` + roleOwner + ` LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD '` + pw.owner + `'`,
		`ALTER ROLE ` + roleWriter + ` LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD '` + pw.writer + `'`,
		`ALTER ROLE ` + roleReader + ` LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD '` + pw.reader + `'` +
			` CONNECTION LIMIT ` + strconv.Itoa(readerConnLimit),
		`ALTER ROLE ` + roleAPI + ` LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD '` + pw.api + `'`,
		// The defaults the reader may have given its own role (ALTER ROLE
		// itself) go; the superuser's are set again below.
		`ALTER ROLE ` + roleReader + ` RESET ALL`,
		`ALTER ROLE ` + roleReader + ` IN DATABASE ` + dbID + ` RESET ALL`,
		// Belt and braces: even a grant made by mistake cannot let the
		// reader write, and a transaction a reader forgot does not hold
		// back a rebuild's swap for ever (a reader may lift the timeout
		// itself: the swap then fails naming its session).
		`ALTER ROLE ` + roleReader + ` SET default_transaction_read_only = on`,
		`ALTER ROLE ` + roleReader + ` SET idle_in_transaction_session_timeout = '5min'`,
		`ALTER ROLE ` + roleAPI + ` SET default_transaction_read_only = on`,
		// The reader may turn read-only off, so nothing it can write may
		// need no grant: large objects (below), and temporary files, which
		// a query of its may spill to disk without bound. temp_file_limit
		// is the superuser's to change, also on the reader's role.
		`ALTER ROLE ` + roleReader + ` SET temp_file_limit = '` + readerTempFileLimit + `'`,
		`ALTER DATABASE ` + dbID + ` OWNER TO ` + roleOwner,
		`REVOKE ALL ON DATABASE ` + dbID + ` FROM PUBLIC`,
		`GRANT CONNECT ON DATABASE ` + dbID + ` TO ` + roleWriter + `, ` + roleReader + `, ` + roleAPI,
		`ALTER SCHEMA public OWNER TO ` + roleOwner,
		`REVOKE CREATE ON SCHEMA public FROM PUBLIC`,
		// Schemas and tables made by the superuser (a data dir from before
		// the roles, a rebuild's leftovers) go to the owner.
		`DO $$ DECLARE r record; BEGIN
		FOR r IN SELECT nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg\_%' AND nspname <> 'information_schema'
			AND nspowner <> '` + roleOwner + `'::regrole LOOP
			EXECUTE format('ALTER SCHEMA %I OWNER TO ` + roleOwner + `', r.nspname);
		END LOOP;
		FOR r IN SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
			WHERE n.nspname NOT LIKE 'pg\_%' AND n.nspname <> 'information_schema' AND c.relkind IN ('r', 'p', 'v', 'm')
			AND c.relowner <> '` + roleOwner + `'::regrole LOOP
			EXECUTE format('ALTER TABLE %I.%I OWNER TO ` + roleOwner + `', r.nspname, r.relname);
		END LOOP;
	END $$`,
		// Tables the owner creates later (migrations, a rebuild's fresh
		// copy, in whatever schema) come with the grants.
		`ALTER DEFAULT PRIVILEGES FOR ROLE ` + roleOwner + ` GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO ` + roleWriter,
		`ALTER DEFAULT PRIVILEGES FOR ROLE ` + roleOwner + ` GRANT SELECT ON TABLES TO ` + roleReader + `, ` + roleAPI,
		// Advisory locks are not checked against any grant: a reader
		// holding the projector's or the migrations' lock would stall
		// them. Only the owner and the writer may take them here.
		`DO $$ DECLARE f record; BEGIN
		FOR f IN SELECT p.oid::regprocedure AS sig FROM pg_proc p
			WHERE p.pronamespace = 'pg_catalog'::regnamespace AND p.proname LIKE 'pg\_%advisory\_%' LOOP
			EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', f.sig);
			EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO ` + roleOwner + `, ` + roleWriter + `', f.sig);
		END LOOP;
	END $$`,
		// Creating a large object needs no grant either: a reader
		// could fill the disk with them. No role here uses them.
		`REVOKE EXECUTE ON FUNCTION pg_catalog.lo_creat(integer), pg_catalog.lo_create(oid),
		pg_catalog.lo_from_bytea(oid, bytea) FROM PUBLIC`,
	}
	for _, q := range stmts {
		if _, err := conn.Exec(ctx, q); err != nil {
			return fmt.Errorf("roles: %w", err)
		}
	}
	return nil
}

// grantRoles gives the writer and reader the tables that exist (those the
// default privileges did not cover: made before the roles, or by goose
// before the defaults of an upgrade); goose's own table stays the owner's
// to change. Run after migrations, as the superuser.
func grantRoles(ctx context.Context, superURL string) error {
	conn, err := pgx.Connect(ctx, superURL)
	if err != nil {
		return fmt.Errorf("grants: connect as the superuser: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	for _, q := range []string{
		`GRANT USAGE ON SCHEMA public TO ` + roleWriter + `, ` + roleReader + `, ` + roleAPI,
		`GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO ` + roleWriter,
		`GRANT SELECT ON ALL TABLES IN SCHEMA public TO ` + roleReader + `, ` + roleAPI,
		`DO $$ BEGIN
		IF to_regclass('public.goose_db_version') IS NOT NULL THEN
			REVOKE INSERT, UPDATE, DELETE ON public.goose_db_version FROM ` + roleWriter + `;
		END IF;
	END $$`,
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			return fmt.Errorf("grants: %w", err)
		}
	}
	return nil
}
