package projector

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/turnstile-dev/turnstile/migrations"
)

// Schemas a rebuild works in. The new read model is built in rebuildSchema
// by the same migrations as the live one, so their DDL cannot drift; the
// swap moves tables between schemas, which keeps index names intact.
const (
	rebuildSchema = "turnstile_rebuild"
	retiredSchema = "turnstile_retired"
	// rebuildLock is the advisory lock key that allows one rebuild per
	// database at a time.
	rebuildLock = int64(0x7475726e_72656275) // "turnrebu"
	// rebuildConns is the connections a rebuild holds at once.
	rebuildConns = 3
	// defaultConnWait bounds the wait for the copiers' connections: others
	// may hold the pool's connections for good (a running projector keeps
	// one), and a wait without end would hang the rebuild.
	defaultConnWait = 10 * time.Second
)

// readModelTables are swapped as a whole, the checkpoint included.
func readModelTables() []string {
	return []string{"projector_checkpoint", "workspaces", "workspace_events", "commands", "dead_letters"}
}

// ErrRebuildRunning means another rebuild holds the database.
var ErrRebuildRunning = errors.New("another rebuild is running on this database")

// Progress reports a rebuild's advance to a callback.
type Progress struct {
	// Phase is "read" while the stream is read and copied, then "index",
	// "swap" and "done".
	Phase string
	Done  uint64 // stream messages read
	Total uint64 // stream messages to read
}

// RebuildStats summarizes a rebuild.
type RebuildStats struct {
	Through    uint64 // last stream sequence included
	Messages   int
	Events     int
	Commands   int
	Workspaces int
	// Quarantined counts the dead letters: messages no reader can use.
	Quarantined int
	// Skipped counts the stream sequences up to Through the stream no
	// longer held: expired outcomes (rejected, no-op, stale), whose rows
	// the rebuilt read model lacks.
	Skipped  uint64
	Duration time.Duration
	// The phases. Load runs to the last row copied (the new tables are
	// created while the stream is read); Index from there to the last index
	// built (a table's indexes are started as soon as its own rows are in,
	// so some of that work falls in Load); Swap is the swap transaction.
	Load, Index, Swap time.Duration
}

// Rebuild builds the read model anew from the whole stream, up to the
// stream's last message when it starts, in fresh tables while the live
// ones keep serving, then swaps them in with one transaction, checkpoint
// included. A running projector notices the swap at its next batch (its
// checkpoint compare-and-set fails) and resumes from the new checkpoint.
// Views or foreign keys on the read model make the swap fail: drop them
// first. progress may be nil. It holds three of the pool's connections at
// once, and fails if they are not free within 10 s: a projector running on
// the same pool keeps one for as long as it runs.
//
// The new tables are ordinary, WAL-logged tables from the first row (the
// rows are copied frozen, in the transaction that truncates the table), so
// once the swap commits, the rebuilt read model survives a crash as any
// committed data does. A rebuild that fails or is canceled leaves the live
// read model as it was.
func (p *Projector) Rebuild(ctx context.Context, progress func(Progress)) (RebuildStats, error) {
	started := time.Now()
	if progress == nil {
		progress = func(Progress) {}
	}
	// The load holds three connections at once (its own and two copiers);
	// with fewer it would wait for a connection forever. All three are
	// taken before the stream is read: a copier that waited for one while
	// the other held its own would stall the read that feeds them both.
	if n := p.cfg.Pool.Config().MaxConns; n < rebuildConns {
		return RebuildStats{}, fmt.Errorf("rebuild: the pool allows %d connections; a rebuild needs at least %d", n, rebuildConns)
	}
	conn, err := p.cfg.Pool.Acquire(ctx)
	if err != nil {
		return RebuildStats{}, fmt.Errorf("rebuild: %w", err)
	}
	defer conn.Release()
	var locked bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, rebuildLock).Scan(&locked); err != nil {
		return RebuildStats{}, fmt.Errorf("rebuild: lock: %w", err)
	}
	if !locked {
		return RebuildStats{}, ErrRebuildRunning
	}
	defer func() {
		_, _ = conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, rebuildLock)
	}()
	var live string
	if err := conn.QueryRow(ctx, `SELECT current_schema()`).Scan(&live); err != nil {
		return RebuildStats{}, fmt.Errorf("rebuild: %w", err)
	}
	swapped := false
	defer func() {
		if !swapped {
			p.dropRebuildSchema(context.WithoutCancel(ctx), conn)
		}
	}()
	st, err := p.cfg.Store.State(ctx)
	if err != nil {
		return RebuildStats{}, fmt.Errorf("rebuild: %w", err)
	}
	// The stream may lack sequences (st.FirstSeq > 1, st.Deleted > 0):
	// expired outcomes do, and cost the read model only their rows. Lost
	// events are refused as the fold meets them (checkFollows: ErrGap).
	copiers, err := p.acquireCopiers(ctx)
	if err != nil {
		return RebuildStats{}, err
	}
	defer func() {
		for _, c := range copiers {
			c.Release()
		}
	}()
	l := &loader{p: p, conn: conn.Conn(), copiers: [2]*pgx.Conn{copiers[0].Conn(), copiers[1].Conn()},
		through: st.LastSeq, progress: progress, ws: map[string]*workspaceRow{}}
	// The stream is read while the new tables are prepared.
	progress(Progress{Phase: "read", Total: l.through})
	copied, err := l.load(ctx, func(ctx context.Context) (map[string][]string, error) {
		if err := p.checkMigrated(ctx); err != nil {
			return nil, err
		}
		return p.prepareSchema(ctx, conn.Conn())
	})
	if err != nil {
		return RebuildStats{}, err
	}
	if err := l.resolve(ctx); err != nil {
		return RebuildStats{}, err
	}
	l.stats.Through = l.through
	l.stats.Load, l.stats.Index = copied.Sub(started), time.Since(copied)
	progress(Progress{Phase: "swap", Done: l.stats.messages64(), Total: l.through})
	swapping := time.Now()
	if err := p.swap(ctx, conn, live); err != nil {
		return RebuildStats{}, err
	}
	swapped = true
	l.stats.Swap = time.Since(swapping)
	l.stats.Duration = time.Since(started)
	progress(Progress{Phase: "done", Done: l.stats.messages64(), Total: l.through})
	p.cfg.Logger.Info("read model rebuilt", "projector", p.cfg.Name, "through", l.stats.Through,
		"messages", l.stats.Messages, "skipped", l.stats.Skipped, "workspaces", l.stats.Workspaces, "quarantined", l.stats.Quarantined, "duration", l.stats.Duration,
		"load", l.stats.Load, "index", l.stats.Index, "swap", l.stats.Swap)
	return l.stats, nil
}

// acquireCopiers takes the copiers' two connections from the pool, waiting
// at most p.connWait for them.
func (p *Projector) acquireCopiers(ctx context.Context) ([]*pgxpool.Conn, error) {
	actx, cancel := context.WithTimeout(ctx, p.connWait)
	defer cancel()
	var conns []*pgxpool.Conn
	for len(conns) < rebuildConns-1 {
		c, err := p.cfg.Pool.Acquire(actx)
		if err != nil {
			for _, c := range conns {
				c.Release()
			}
			if ctx.Err() == nil && actx.Err() != nil {
				st := p.cfg.Pool.Stat()
				return nil, fmt.Errorf("rebuild: no free connection in the pool within %s (%d of %d in use, this rebuild's included): "+
					"a rebuild needs %d at once; give it a pool of its own or a larger one", p.connWait, st.AcquiredConns(), st.MaxConns(), rebuildConns)
			}
			return nil, fmt.Errorf("rebuild: %w", err)
		}
		conns = append(conns, c)
	}
	return conns, nil
}

// dropRebuildSchema drops what a failed rebuild leaves, on conn, which
// holds the rebuild lock. A query canceled under a connection closes it,
// and the server then releases its lock: then the schema is dropped on
// another connection once it has taken the lock again, unless another
// rebuild keeps it (that one drops the schema itself).
func (p *Projector) dropRebuildSchema(ctx context.Context, conn *pgxpool.Conn) {
	drop := `DROP SCHEMA IF EXISTS ` + rebuildSchema + ` CASCADE`
	if !conn.Conn().IsClosed() {
		_, _ = conn.Exec(ctx, drop)
		return
	}
	// The closed connection's backend may take a moment to end.
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_ = p.cfg.Pool.AcquireFunc(ctx, func(c *pgxpool.Conn) error {
		if _, err := c.Exec(ctx, `SELECT pg_advisory_lock($1)`, rebuildLock); err != nil {
			return err
		}
		_, _ = c.Exec(ctx, drop)
		_, err := c.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, rebuildLock)
		return err
	})
}

// messages64 is Messages as a stream count.
func (s RebuildStats) messages64() uint64 { return uint64(s.Messages) }

func (p *Projector) checkMigrated(ctx context.Context) error {
	db := stdlib.OpenDBFromPool(p.cfg.Pool)
	defer db.Close()
	pending, err := migrations.Pending(ctx, db)
	if err != nil {
		return fmt.Errorf("rebuild: %w", err)
	}
	if pending {
		return errors.New("rebuild: the database lacks migrations of this build: run `turnstile migrate` first")
	}
	return nil
}

// prepareSchema creates the empty read model in rebuildSchema and drops
// its indexes, returning per table the statements that build them again.
// Every index, primary keys included, is built once after the load: a
// sort is far cheaper than random btree inserts.
func (p *Projector) prepareSchema(ctx context.Context, conn *pgx.Conn) (map[string][]string, error) {
	if _, err := conn.Exec(ctx, `DROP SCHEMA IF EXISTS `+rebuildSchema+` CASCADE; CREATE SCHEMA `+rebuildSchema); err != nil {
		return nil, fmt.Errorf("rebuild: schema: %w", err)
	}
	cfg := p.cfg.Pool.Config().ConnConfig.Copy()
	cfg.RuntimeParams["search_path"] = rebuildSchema
	db := stdlib.OpenDB(*cfg)
	err := migrations.Up(ctx, db)
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("rebuild: %w", err)
	}
	rows, err := conn.Query(ctx, `SELECT i.tablename, format('DROP INDEX %I.%I', i.schemaname, i.indexname), i.indexdef
		FROM pg_indexes i WHERE i.schemaname = $1 AND i.tablename = ANY($2) AND NOT EXISTS (SELECT 1 FROM pg_constraint c
			WHERE c.conindid = format('%I.%I', i.schemaname, i.indexname)::regclass)
		UNION ALL
		SELECT t.relname, format('ALTER TABLE %s DROP CONSTRAINT %I', c.conrelid::regclass, c.conname),
			format('ALTER TABLE %s ADD CONSTRAINT %I %s', c.conrelid::regclass, c.conname, pg_get_constraintdef(c.oid))
		FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid
		WHERE c.connamespace = $1::regnamespace AND c.contype = 'p' AND t.relname = ANY($2)`,
		rebuildSchema, readModelTables())
	if err != nil {
		return nil, fmt.Errorf("rebuild: indexes: %w", err)
	}
	var drops []string
	defs := map[string][]string{}
	for rows.Next() {
		var table, drop, def string
		if err := rows.Scan(&table, &drop, &def); err != nil {
			return nil, fmt.Errorf("rebuild: indexes: %w", err)
		}
		drops, defs[table] = append(drops, drop), append(defs[table], def)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("rebuild: indexes: %w", err)
	}
	// Primary keys first: the commands' key is what finds a command's
	// later outcomes (buildIndexes), and the other indexes are then built
	// once, after those rows are gone.
	for _, d := range defs {
		slices.SortStableFunc(d, func(a, b string) int {
			return cmp.Compare(pkRank(a), pkRank(b))
		})
	}
	if len(drops) > 0 { // in one transaction: one commit
		if _, err := conn.Exec(ctx, strings.Join(drops, ";\n")); err != nil {
			return nil, fmt.Errorf("rebuild: drop indexes: %w", err)
		}
	}
	return defs, nil
}

// pkRank orders index statements: primary keys (ADD CONSTRAINT) first.
func pkRank(def string) int {
	if strings.HasPrefix(def, "ALTER TABLE") {
		return 0
	}
	return 1
}

// swap replaces the live read model with the rebuilt one in one
// transaction.
func (p *Projector) swap(ctx context.Context, conn *pgxpool.Conn, live string) error {
	liveT := func(t string) string { return pgx.Identifier{live, t}.Sanitize() }
	newT := func(t string) string { return pgx.Identifier{rebuildSchema, t}.Sanitize() }
	type stmt struct {
		sql  string
		args []any
	}
	stmts := []stmt{
		// Wait for readers rather than queue them behind us for long.
		{sql: `SET LOCAL lock_timeout = '30s'`},
		// The checkpoint table first: a projector's batch locks it first
		// too, so the two cannot deadlock.
		{sql: `LOCK TABLE ` + liveT("projector_checkpoint") + ` IN ACCESS EXCLUSIVE MODE`},
		// Other projectors' checkpoints stay as they are.
		{sql: `INSERT INTO ` + newT("projector_checkpoint") + ` SELECT * FROM ` + liveT("projector_checkpoint") +
			` WHERE name <> $1`, args: []any{p.cfg.Name}},
		{sql: `DROP SCHEMA IF EXISTS ` + retiredSchema + ` CASCADE`},
		{sql: `CREATE SCHEMA ` + retiredSchema},
	}
	for _, t := range readModelTables() {
		stmts = append(stmts, stmt{sql: `ALTER TABLE ` + liveT(t) + ` SET SCHEMA ` + retiredSchema})
	}
	for _, t := range readModelTables() {
		stmts = append(stmts, stmt{sql: `ALTER TABLE ` + newT(t) + ` SET SCHEMA ` + pgx.Identifier{live}.Sanitize()})
	}
	for _, t := range readModelTables() {
		// No CASCADE: a user's view over the read model fails the swap
		// instead of vanishing with it.
		stmts = append(stmts, stmt{sql: `DROP TABLE ` + pgx.Identifier{retiredSchema, t}.Sanitize()})
	}
	stmts = append(stmts, stmt{sql: `DROP SCHEMA ` + retiredSchema}, stmt{sql: `DROP SCHEMA ` + rebuildSchema + ` CASCADE`})

	tx, err := conn.Begin(ctx)
	if err != nil {
		return fmt.Errorf("rebuild: swap: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	for _, s := range stmts {
		if _, err := tx.Exec(ctx, s.sql, s.args...); err != nil {
			var pe *pgconn.PgError
			if errors.As(err, &pe) && pe.Code == lockNotAvailable {
				_ = tx.Rollback(ctx)
				return fmt.Errorf("rebuild: swap: %w", p.heldBy(ctx, conn, live, err))
			}
			return fmt.Errorf("rebuild: swap: %s: %w", s.sql, err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("rebuild: swap: %w", err)
	}
	return nil
}

// heldBy explains a swap that waited its lock_timeout out: the sessions
// holding locks on the live read model, typically a reader's transaction
// left open (psql with database-url), which the rebuild does not end on
// its own: whose session to end is the operator's call.
func (p *Projector) heldBy(ctx context.Context, conn *pgxpool.Conn, live string, cause error) error {
	tables := make([]string, 0, len(readModelTables()))
	for _, t := range readModelTables() {
		tables = append(tables, pgx.Identifier{live, t}.Sanitize())
	}
	rows, err := conn.Query(ctx, `SELECT DISTINCT a.pid, coalesce(a.usename, ''), coalesce(a.application_name, ''), coalesce(a.state, ''),
			coalesce(extract(epoch FROM now() - a.xact_start), 0)
		FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
		WHERE l.granted AND l.relation = ANY (SELECT to_regclass(t) FROM unnest($1::text[]) t) AND a.pid <> pg_backend_pid()
		ORDER BY a.pid`, tables)
	if err != nil {
		return fmt.Errorf("the read model's tables stayed locked by other sessions (%w); finding which failed: %v", cause, err)
	}
	var held []string
	for rows.Next() {
		var (
			pid                int32
			user, app, state   string
			transactionSeconds float64
		)
		if err := rows.Scan(&pid, &user, &app, &state, &transactionSeconds); err != nil {
			rows.Close()
			return fmt.Errorf("the read model's tables stayed locked by other sessions (%w); finding which failed: %v", cause, err)
		}
		held = append(held, fmt.Sprintf("pid %d (user %s, application %q, %s, transaction open %s)", pid, user, app, state,
			(time.Duration(transactionSeconds)*time.Second).String()))
	}
	rows.Close()
	if len(held) == 0 {
		held = []string{"sessions gone by now"}
	}
	return fmt.Errorf("the read model's tables stayed locked by other sessions for the swap's lock timeout: %s; "+
		"have them commit or end them (SELECT pg_terminate_backend(pid), as a superuser) and rebuild again; the live read model is unchanged: %w",
		strings.Join(held, "; "), cause)
}
