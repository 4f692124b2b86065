package projector

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// loader reads the stream and writes it into rebuildSchema.
type loader struct {
	p        *Projector
	conn     *pgx.Conn
	copiers  [2]*pgx.Conn // the events' and the commands' connections
	through  uint64
	progress func(Progress)
	indexes  map[string][]string // per table, the statements that build its indexes
	ws       map[string]*workspaceRow
	// Row slices come back once copied, to be filled again: memory reused
	// costs no page faults and no collections.
	freeEvents   chan []eventFacts
	freeCommands chan []commandRow
	// unresolved counts accepted commands whose event fold could not
	// locate; resolve finds them in SQL.
	unresolved int
	// dead are the quarantined messages, in stream order.
	dead []deadLetterRow
	// skipped counts the sequences up to through the stream no longer
	// held (expired outcomes); written by fetch's reader alone.
	skipped  uint64
	lastTime time.Time
	stats    RebuildStats
}

// tableDone is a table's row count and when they were all copied.
type tableDone struct {
	rows   int64
	copied time.Time
	err    error
}

// load writes the read model's tables from messages 1..through. prepare
// creates the empty tables on l.conn and returns per table the statements
// that build its indexes; it runs while the stream is read. One goroutine
// fetches, two decode, one folds in stream order and hands the rows of
// events and commands to two copiers, each with a connection and a
// transaction of its own, which then build their table's indexes. The
// workspaces, known only at the end, and the checkpoint are written last,
// on l.conn. load returns the time the last row was copied, once every
// index is built.
func (l *loader) load(ctx context.Context,
	prepare func(context.Context) (map[string][]string, error)) (time.Time, error) {
	// The first failure cancels the rest and is the one returned.
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	prepared := make(chan struct{})
	go func() {
		defer close(prepared)
		indexes, err := prepare(ctx)
		if err != nil {
			cancel(err)
			return
		}
		l.indexes = indexes
	}()
	// Room for what is read while the tables are prepared.
	evs, cmds := make(chan []eventFacts, 24), make(chan []commandRow, 24)
	l.freeEvents, l.freeCommands = make(chan []eventFacts, 40), make(chan []commandRow, 40)
	evDone, cmdDone := make(chan tableDone, 1), make(chan tableDone, 1)
	go func() {
		<-prepared
		evDone <- l.copier(ctx, cancel, l.copiers[0], "workspace_events", eventCopyColumns, func(ctx context.Context, tx pgx.Tx) (int64, error) {
			return copyTable(ctx, tx, "workspace_events", eventCopyColumns, evs, func(b []byte, f *eventFacts) []byte {
				return encodeEvent(b, &f.row)
			}, l.freeEvents)
		})
	}()
	go func() {
		<-prepared
		cmdDone <- l.copier(ctx, cancel, l.copiers[1], "commands", commandCopyColumns, func(ctx context.Context, tx pgx.Tx) (int64, error) {
			return copyTable(ctx, tx, "commands", commandCopyColumns, cmds, encodeCommand, l.freeCommands)
		})
	}()
	var ws, cp, dl tableDone
	if err := l.read(ctx, evs, cmds); err != nil {
		cancel(err) // before the copiers see their rows end
	}
	<-prepared
	if ctx.Err() == nil {
		l.progress(Progress{Phase: "index", Done: l.through, Total: l.through})
		if ws = l.fill(ctx, l.conn, "workspaces", workspaceCopyColumns, l.copyWorkspaces); ws.err == nil {
			if dl = l.fill(ctx, l.conn, "dead_letters", nil, l.writeDeadLetters); dl.err == nil {
				cp = l.fill(ctx, l.conn, "projector_checkpoint", nil, l.writeCheckpoint)
			}
		}
		if err := errors.Join(ws.err, dl.err, cp.err); err != nil {
			cancel(err)
		}
	}
	close(evs)
	close(cmds)
	ev, cmd := <-evDone, <-cmdDone
	if err := context.Cause(ctx); err != nil {
		return time.Time{}, err
	}
	var copied time.Time
	for _, d := range []tableDone{ws, dl, cp, ev, cmd} {
		copied = later(copied, d.copied)
	}
	l.stats.Events, l.stats.Commands, l.stats.Workspaces = int(ev.rows), int(cmd.rows), int(ws.rows)
	l.stats.Quarantined = int(dl.rows)
	l.stats.Messages = l.stats.Events + l.stats.Commands + l.stats.Quarantined
	l.stats.Skipped = l.skipped
	return copied, nil
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// copier is fill on conn; a failure cancels the load.
func (l *loader) copier(ctx context.Context, cancel context.CancelCauseFunc, conn *pgx.Conn, table string, cols []string,
	write func(context.Context, pgx.Tx) (int64, error)) tableDone {
	d := l.fill(ctx, conn, table, cols, write)
	if d.err != nil {
		cancel(d.err)
	}
	return d
}

// fill writes one table in one transaction on conn: it truncates it (so
// that COPY may freeze the rows: no later pass sets their hint bits),
// writes the rows, builds the table's indexes and gathers statistics on
// cols.
//
// An index build sorts in memory when it fits, on this backend alone:
// parallel workers cost more than they bring for tables this size, and
// the other tables are being built beside it.
//
// The statistics are a quick sample (statistics target 10: 3,000 rows)
// that gives the planner the table's shape at once. ANALYZE with a column
// list leaves the table's count of changes since the last analysis as it
// is, so autovacuum soon analyzes the new table in full, as it would have
// had the rows come one by one.
func (l *loader) fill(ctx context.Context, conn *pgx.Conn, table string, cols []string,
	write func(context.Context, pgx.Tx) (int64, error)) tableDone {
	var d tableDone
	if d.err = ctx.Err(); d.err != nil {
		return d // pgx closes a connection whose BEGIN fails
	}
	d.err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		t := pgx.Identifier{rebuildSchema, table}.Sanitize()
		if _, err := tx.Exec(ctx, `SET LOCAL maintenance_work_mem = '256MB';
			SET LOCAL max_parallel_maintenance_workers = 0; SET LOCAL default_statistics_target = 10;
			TRUNCATE `+t); err != nil {
			return err
		}
		n, err := write(ctx, tx)
		if err != nil {
			return err
		}
		d.rows, d.copied = n, time.Now()
		dups, err := l.buildIndexes(ctx, tx, table)
		if err != nil {
			return err
		}
		d.rows -= dups
		if len(cols) > 0 {
			if _, err := tx.Exec(ctx, `ANALYZE `+t+` (`+strings.Join(cols, ", ")+`)`); err != nil {
				return fmt.Errorf("analyze: %w", err)
			}
		}
		return nil
	})
	if d.err != nil {
		d.err = fmt.Errorf("rebuild: %s: %w", table, d.err)
	}
	return d
}

// uniqueViolation is PostgreSQL's SQLSTATE unique_violation.
const uniqueViolation = "23505"

// buildIndexes builds table's indexes in tx. A command's first outcome is
// its outcome and a later one (a redelivery after the dedupe window) is
// ignored, as the incremental path does with ON CONFLICT DO NOTHING; the
// load copies them all, and when the commands' primary key finds two, the
// later ones are deleted and the indexes built again. It returns the
// number of rows deleted.
func (l *loader) buildIndexes(ctx context.Context, tx pgx.Tx, table string) (int64, error) {
	build := func(tx pgx.Tx) error {
		for _, def := range l.indexes[table] {
			if _, err := tx.Exec(ctx, def); err != nil {
				return fmt.Errorf("%s: %w", def, err)
			}
		}
		return nil
	}
	if table != "commands" {
		return 0, build(tx)
	}
	err := pgx.BeginFunc(ctx, tx, build) // a savepoint
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != uniqueViolation {
		return 0, err
	}
	tag, err := tx.Exec(ctx, `DELETE FROM `+rebuildSchema+`.commands c USING (SELECT command_id,
			min(outcome_stream_seq) AS first FROM `+rebuildSchema+`.commands GROUP BY command_id HAVING count(*) > 1) d
		WHERE c.command_id = d.command_id AND c.outcome_stream_seq > d.first`)
	if err != nil {
		return 0, fmt.Errorf("later outcomes: %w", err)
	}
	return tag.RowsAffected(), build(tx)
}

// copyWorkspaces copies the folded workspaces.
func (l *loader) copyWorkspaces(ctx context.Context, tx pgx.Tx) (int64, error) {
	rows := make([]specRow, 0, len(l.ws))
	for _, id := range slices.Sorted(maps.Keys(l.ws)) {
		r := l.ws[id]
		spec, err := specJSON(r)
		if err != nil {
			return 0, err
		}
		rows = append(rows, specRow{r, spec})
	}
	ch := make(chan []specRow, 1)
	ch <- rows
	close(ch)
	return copyTable(ctx, tx, "workspaces", workspaceCopyColumns, ch, encodeWorkspace, nil)
}

// writeDeadLetters writes the quarantined messages: few, in one statement.
func (l *loader) writeDeadLetters(ctx context.Context, tx pgx.Tx) (int64, error) {
	if len(l.dead) == 0 {
		return 0, nil
	}
	tag, err := tx.Exec(ctx, insertDeadLettersSQL(pgx.Identifier{rebuildSchema, "dead_letters"}.Sanitize(), false),
		deadLetterColumns(l.dead)...)
	return tag.RowsAffected(), err
}

// writeCheckpoint writes this projector's checkpoint: the last message.
func (l *loader) writeCheckpoint(ctx context.Context, tx pgx.Tx) (int64, error) {
	var msgTime *time.Time
	if l.through > 0 {
		msgTime = &l.lastTime
	}
	_, err := tx.Exec(ctx, `INSERT INTO `+rebuildSchema+`.projector_checkpoint (name, stream_seq, msg_time, updated_at)
		VALUES ($1, $2, $3, $4)`, l.p.cfg.Name, int64(l.through), msgTime, l.p.cfg.Now())
	return 1, err
}

// resolve fills in the event references fold could not, as the
// incremental path does in SQL. It needs the events' indexes built.
func (l *loader) resolve(ctx context.Context) error {
	if l.unresolved == 0 {
		return nil
	}
	_, err := l.conn.Exec(ctx, `UPDATE `+rebuildSchema+`.commands c SET event_stream_seq =
		(SELECT e.stream_seq FROM `+rebuildSchema+`.workspace_events e WHERE e.workspace_id = c.workspace_id
			AND e.seq = c.event_seq AND e.stream_seq < c.outcome_stream_seq ORDER BY e.stream_seq LIMIT 1)
		WHERE c.event_seq IS NOT NULL AND c.event_stream_seq IS NULL`)
	if err != nil {
		return fmt.Errorf("rebuild: resolve events: %w", err)
	}
	return nil
}
