package projector

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// errCheckpointMoved means the checkpoint is not where this projector left
// it: a rebuild swapped the read model, or another projector applied the
// batch. Nothing was written; resume from the checkpoint.
var errCheckpointMoved = errors.New("checkpoint moved under the projector (a rebuild or another projector)")

// store writes batches to the live read model (the tables on the
// connection's search_path).
type store struct {
	pool *pgxpool.Pool
	name string
	now  func() time.Time
}

// ensureCheckpoint creates the checkpoint row if needed and reads it.
func (s *store) ensureCheckpoint(ctx context.Context, conn *pgxpool.Conn) (Checkpoint, error) {
	if _, err := conn.Exec(ctx, `INSERT INTO projector_checkpoint (name, stream_seq, updated_at)
		VALUES ($1, 0, $2) ON CONFLICT (name) DO NOTHING`, s.name, s.now()); err != nil {
		return Checkpoint{}, fmt.Errorf("checkpoint: %w", err)
	}
	return ReadCheckpoint(ctx, conn, s.name)
}

// maxCached bounds the session's cache of workspace rows; past it the
// cache starts over (a miss costs one lookup, not correctness).
const maxCached = 200_000

// errBusy means a batch could not begin at once, beside the one in
// flight: no connection was free, or someone (a rebuild's swap) waits for
// the checkpoint table. Commit the batch in flight, then begin again,
// waiting.
var errBusy = errors.New("cannot begin beside the batch in flight")

// lockNotAvailable is PostgreSQL's SQLSTATE lock_not_available (NOWAIT,
// lock_timeout).
const lockNotAvailable = "55P03"

// lockTimeout bounds any lock wait of a batch's transaction.
const lockTimeout = "10s"

// tx is one batch's transaction: begun, its event and command rows sent,
// not yet committed. Up to two are in flight, each on its connection:
// while one commits, the next one's rows are being written.
//
// The next batch's first writes never wait on the batch in flight: their
// events are other stream messages, and an outcome whose command the batch
// in flight records is left out (the first outcome counts). The rest, the
// workspace rows and the checkpoint compare-and-set, is sent by finish,
// once the batch before has committed: no batch ever waits on rows of the
// one after it, and the server never stops reading a batch mid-way for
// one of ours, so sending never blocks on it either.
type tx struct {
	conn *pgxpool.Conn
	lead bool // conn is the session's leading connection
	br   pgx.BatchResults
	rows int // statements sent in br
	// rest is the workspace upsert and the compare-and-set, for finish.
	rest pgx.Batch
	info BatchInfo
	msgs []message
	// events locates this batch's events by workspace and per-workspace
	// sequence, for outcomes of the next batch that the cache cannot
	// resolve and SQL cannot see before this batch commits.
	events map[eventKey]int64
	// commands are the command ids this batch records.
	commands map[string]bool
}

type eventKey struct {
	workspace string
	seq       int64
}

// lead takes the session's leading connection and, waiting as long as
// another session of this name and schema writes, its advisory lock: one
// session per read model writes at a time, so batches of two sessions
// never interleave (they would wait on each other's rows). The lock goes
// with the connection: release it with unlead. Keepalives and a user
// timeout (for unacknowledged data) make the server notice within a
// minute a holder whose host vanished, rather than hours.
func (s *store) lead(ctx context.Context) (*pgxpool.Conn, error) {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	if _, err := conn.Exec(ctx, `SET tcp_keepalives_idle = 20; SET tcp_keepalives_interval = 5;
		SET tcp_keepalives_count = 4; SET tcp_user_timeout = 60000`); err != nil {
		s.unlead(conn)
		return nil, fmt.Errorf("lead: %w", err)
	}
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock(hashtextextended('turnstile projector ' ||
		current_schema() || ' ' || $1, 0))`, s.name); err != nil {
		s.unlead(conn)
		return nil, fmt.Errorf("lead: %w", err)
	}
	return conn, nil
}

// unlead closes the leading connection: the lock ends with its session,
// and the pool never hands out a connection that holds it.
func (s *store) unlead(conn *pgxpool.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = conn.Conn().Close(ctx)
	conn.Release()
}

// begin starts the transaction of msgs, which follow from, and sends its
// event and command rows. prev is the transaction in flight before it, if
// any; lead is the session's leading connection, used when prev does not
// hold it. With prev in flight begin waits for neither a connection nor a
// lock: it fails with errBusy instead.
//
// cache holds the rows of workspaces as of the last batch folded; begin
// loads what it lacks and folds msgs into it. It is valid only while the
// checkpoint is ours: the caller drops it whenever a batch fails.
func (s *store) begin(ctx context.Context, lead *pgxpool.Conn, from uint64, msgs []message, info BatchInfo,
	cache map[string]*workspaceRow, prev *tx, st missingCounter) (*tx, error) {
	t := &tx{info: info}
	if prev == nil || !prev.lead {
		t.conn, t.lead = lead, true
	} else {
		conn, err := s.acquire(ctx)
		if err != nil {
			return nil, err
		}
		t.conn = conn
	}
	// Every table the batch writes, at once and the checkpoint table first,
	// as a rebuild's swap locks them: the two cannot deadlock, and nothing
	// the batch does later waits on a lock (a statement's first parse
	// takes its table's lock too). With a batch in flight, do not queue
	// behind anyone (a swap, a migration) who waits for that batch, which
	// waits for us to commit it. Read committed whatever the server's
	// default: the compare-and-set must see the batch before commit.
	//
	// LOCK TABLE leaves the tables' indexes out: someone who queues for an
	// index alone behind one batch can still hold up a statement of the
	// other. lock_timeout bounds that wait (the session restarts from its
	// checkpoint) instead of letting it last for ever.
	nowait := ""
	if prev != nil {
		nowait = " NOWAIT"
	}
	if _, err := t.conn.Exec(ctx, `BEGIN ISOLATION LEVEL READ COMMITTED; SET LOCAL lock_timeout = '`+
		lockTimeout+`'; LOCK TABLE projector_checkpoint, workspaces, workspace_events, commands, dead_letters
		IN ROW EXCLUSIVE MODE`+nowait); err != nil {
		t.rollback(ctx)
		if pgErr := (*pgconn.PgError)(nil); prev != nil && errors.As(err, &pgErr) && pgErr.Code == lockNotAvailable {
			return nil, errBusy
		}
		return nil, fmt.Errorf("begin batch %d-%d: %w", info.First, info.Last, err)
	}
	// A row the cache lacks was not touched by a batch in flight (those
	// are folded into the cache), so what is committed is current; if
	// anyone else wrote since from, the checkpoint compare-and-set fails
	// and nothing is kept.
	if err := loadMissing(ctx, t.conn, msgs, cache); err != nil {
		t.rollback(ctx)
		return nil, err
	}
	ws, evs, cmds, err := foldBatch(ctx, cache, msgs, st)
	if err != nil {
		t.rollback(ctx)
		return nil, err
	}
	t.events = make(map[eventKey]int64, len(evs))
	for _, e := range evs {
		k := eventKey{e.Workspace, e.Seq}
		if _, ok := t.events[k]; !ok { // the earliest, as SQL resolves it
			t.events[k] = e.StreamSeq
		}
	}
	t.commands = make(map[string]bool, len(cmds))
	kept := cmds[:0]
	for _, c := range cmds {
		t.commands[c.CommandID] = true
		if prev != nil {
			if prev.commands[c.CommandID] {
				continue // a later outcome; the one in flight counts
			}
			if c.EventSeq != nil && c.EventStreamSeq == nil {
				if seq, ok := prev.events[eventKey{c.Workspace, *c.EventSeq}]; ok {
					c.EventStreamSeq = &seq
				}
			}
		}
		kept = append(kept, c)
	}
	cmds = kept
	last := msgs[len(msgs)-1]
	var b pgx.Batch
	if len(evs) > 0 {
		b.Queue(insertEventsSQL, eventColumns(evs)...)
	}
	if len(cmds) > 0 {
		b.Queue(insertCommandsSQL, commandColumns(cmds)...)
	}
	if dead := deadLetters(msgs); len(dead) > 0 {
		b.Queue(insertDeadLettersSQL("dead_letters", true), deadLetterColumns(dead)...)
	}
	if len(ws) > 0 {
		cols, err := workspaceColumns(ws)
		if err != nil {
			t.rollback(ctx)
			return nil, err
		}
		t.rest.Queue(upsertWorkspacesSQL, cols...)
	}
	t.rest.Queue(`UPDATE projector_checkpoint SET stream_seq = $2, msg_time = $3, updated_at = $4
		WHERE name = $1 AND stream_seq = $5`, s.name, int64(last.seq), last.time, s.now(), int64(from))
	if b.Len() > 0 {
		t.br, t.rows = t.conn.SendBatch(ctx, &b), b.Len()
	}
	return t, nil
}

// acquire takes a connection beside a batch in flight. It does not wait
// for one to be released (whoever holds them all may be waiting for that
// batch, as a rebuild sharing the pool does): it fails with errBusy.
func (s *store) acquire(ctx context.Context) (*pgxpool.Conn, error) {
	if st := s.pool.Stat(); st.IdleConns() == 0 && st.TotalConns() >= st.MaxConns() {
		return nil, errBusy
	}
	// Another goroutine may take the last idle one first: wait a little.
	actx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	conn, err := s.pool.Acquire(actx)
	if err != nil {
		if ctx.Err() == nil {
			return nil, errBusy
		}
		return nil, fmt.Errorf("connect: %w", err)
	}
	return conn, nil
}

// finish writes the rest of t, once the batch before it has committed, and
// commits t. Whatever the result, t's connection is given back (the
// leading one stays with the session).
func (s *store) finish(ctx context.Context, t *tx, h Hooks) error {
	var err error
	if t.br != nil {
		_, err = drain(t.br, t.rows)
		t.br = nil
	}
	var cas pgconn.CommandTag // the compare-and-set's: it is the last statement
	if err == nil {
		cas, err = drain(t.conn.SendBatch(ctx, &t.rest), t.rest.Len())
	}
	if err != nil {
		t.rollback(ctx)
		return fmt.Errorf("write batch %d-%d: %w", t.info.First, t.info.Last, err)
	}
	if cas.RowsAffected() != 1 {
		t.rollback(ctx)
		return errCheckpointMoved
	}
	if h.BeforeCommit != nil {
		if err := h.BeforeCommit(ctx, t.info); err != nil {
			t.rollback(ctx)
			return fmt.Errorf("before commit: %w", err)
		}
	}
	tag, err := t.conn.Exec(ctx, `COMMIT`)
	if err == nil && tag.String() != "COMMIT" {
		err = errors.New("transaction was rolled back")
	}
	if err != nil {
		t.rollback(ctx)
		return fmt.Errorf("commit batch %d-%d: %w", t.info.First, t.info.Last, err)
	}
	t.release()
	return nil
}

// drain reads the results of n statements sent in br, stopping at the
// first error, and closes br. It returns the last statement's tag.
func drain(br pgx.BatchResults, n int) (pgconn.CommandTag, error) {
	var tag pgconn.CommandTag
	var err error
	for range n {
		if tag, err = br.Exec(); err != nil {
			break
		}
	}
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	return tag, err
}

// rollback ends t without keeping anything and gives back its connection.
func (t *tx) rollback(ctx context.Context) {
	if t.br != nil {
		_ = t.br.Close()
		t.br = nil
	}
	_, _ = t.conn.Exec(context.WithoutCancel(ctx), `ROLLBACK`)
	t.release()
}

// release gives t's connection back to the pool, unless it is the
// session's leading one, which the session closes when it ends. A pooled
// connection left inside a transaction is closed, not reused.
func (t *tx) release() {
	if !t.lead {
		t.conn.Release()
	}
}

// loadMissing adds to cache the rows of workspaces the batch touches that
// it lacks and the read model has.
func loadMissing(ctx context.Context, conn *pgxpool.Conn, msgs []message, cache map[string]*workspaceRow) error {
	seen := map[string]bool{}
	var ids []string
	for _, m := range msgs {
		var id string
		switch {
		case m.event != nil:
			id = m.event.row.Workspace
		case m.outcome != nil && m.outcome.EventSeq != nil:
			id = m.outcome.Workspace
		}
		if id != "" && cache[id] == nil && !seen[id] {
			seen[id] = true
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 {
		return nil
	}
	rows, err := conn.Query(ctx, `SELECT id, status, created_at, status_changed_at, last_event_seq, last_stream_seq
		FROM workspaces WHERE id = ANY($1)`, ids)
	if err != nil {
		return fmt.Errorf("load workspaces: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var w workspaceRow
		if err := rows.Scan(&w.ID, &w.Status, &w.CreatedAt, &w.ChangedAt, &w.LastEventSeq, &w.LastStreamSeq); err != nil {
			return fmt.Errorf("load workspaces: %w", err)
		}
		cache[w.ID] = &w
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("load workspaces: %w", err)
	}
	return nil
}

// foldBatch folds the batch over prev, which it updates, and returns the
// newest row of each workspace touched, in first-touched order, the event
// rows and the command rows. An event that follows missing events of its
// workspace (checkFollows) fails it.
func foldBatch(ctx context.Context, prev map[string]*workspaceRow, msgs []message, st missingCounter) ([]*workspaceRow, []eventRow, []commandRow, error) {
	var order []*workspaceRow
	touched := map[string]bool{}
	var evs []eventRow
	var cmds []commandRow
	for _, m := range msgs {
		if m.outcome != nil {
			cmds = append(cmds, resolveEvent(prev[m.outcome.Workspace], *m.outcome))
			continue
		}
		if m.event == nil {
			continue
		}
		if err := checkFollows(ctx, st, prev[m.event.row.Workspace], m.event); err != nil {
			return nil, nil, nil, err
		}
		w, e := fold(prev[m.event.row.Workspace], m.event)
		w = w.owned() // kept in the cache across batches
		evs = append(evs, e)
		if p := prev[w.ID]; p != nil && touched[w.ID] {
			*p = w
			continue
		}
		prev[w.ID] = &w
		touched[w.ID] = true
		order = append(order, &w)
	}
	return order, evs, cmds, nil
}

const insertEventsSQL = `INSERT INTO workspace_events (stream_seq, event_id, workspace_id, seq, type, generation,
	spec_version, from_status, to_status, reason, exit_code, payload, command_id, actor, time)
SELECT u.stream_seq, u.event_id, u.workspace_id, u.seq, u.type, u.generation, u.spec_version, u.from_status,
	u.to_status, u.reason, u.exit_code, u.payload::jsonb, u.command_id, u.actor, u.time
FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::bigint[], $7::bigint[],
	$8::text[], $9::text[], $10::text[], $11::int[], $12::text[], $13::text[], $14::text[], $15::timestamptz[])
	AS u(stream_seq, event_id, workspace_id, seq, type, generation, spec_version, from_status, to_status,
	reason, exit_code, payload, command_id, actor, time)
ON CONFLICT (stream_seq) DO NOTHING`

// A command's first outcome is its outcome: a later record for the same id
// (a redelivery after the dedupe window) is ignored, here and in rebuild.
const insertCommandsSQL = `INSERT INTO commands (command_id, workspace_id, type, actor, received_at, decided_at,
	outcome, rejection_code, rejection_message, reason, event_stream_seq, event_seq, generation,
	command_generation, state, outcome_stream_seq)
SELECT u.command_id, u.workspace_id, u.type, u.actor, u.received_at, u.decided_at, u.outcome, u.rejection_code,
	u.rejection_message, u.reason,
	COALESCE(u.event_stream_seq, (SELECT e.stream_seq FROM workspace_events e WHERE e.workspace_id = u.workspace_id
		AND e.seq = u.event_seq AND e.stream_seq < u.outcome_stream_seq ORDER BY e.stream_seq LIMIT 1)),
	u.event_seq, u.generation, u.command_generation, u.state, u.outcome_stream_seq
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::timestamptz[], $7::text[],
	$8::text[], $9::text[], $10::text[], $11::bigint[], $12::bigint[], $13::bigint[], $14::bigint[], $15::text[],
	$16::bigint[])
	AS u(command_id, workspace_id, type, actor, received_at, decided_at, outcome, rejection_code,
	rejection_message, reason, event_stream_seq, event_seq, generation, command_generation, state, outcome_stream_seq)
ON CONFLICT (command_id) DO NOTHING`

// container_id comes from the state: the event of a successful attempt
// names its container.
const upsertWorkspacesSQL = `INSERT INTO workspaces (id, status, generation, spec_version, attempt_spec_version,
	spec, image, last_error, last_event_seq, last_stream_seq, created_at, updated_at, status_changed_at, deleted_at,
	container_id)
SELECT u.id, u.status, u.generation, u.spec_version, u.attempt, u.spec::jsonb, u.image, u.last_error,
	u.last_event_seq, u.last_stream_seq, u.created_at, u.updated_at, u.changed_at, u.deleted_at, u.container_id
FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[], $6::text[], $7::text[], $8::text[],
	$9::bigint[], $10::bigint[], $11::timestamptz[], $12::timestamptz[], $13::timestamptz[], $14::timestamptz[],
	$15::text[])
	AS u(id, status, generation, spec_version, attempt, spec, image, last_error, last_event_seq,
	last_stream_seq, created_at, updated_at, changed_at, deleted_at, container_id)
ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status, generation = EXCLUDED.generation,
	spec_version = EXCLUDED.spec_version, attempt_spec_version = EXCLUDED.attempt_spec_version,
	spec = EXCLUDED.spec, image = EXCLUDED.image, last_error = EXCLUDED.last_error,
	container_id = EXCLUDED.container_id,
	last_event_seq = EXCLUDED.last_event_seq, last_stream_seq = EXCLUDED.last_stream_seq,
	created_at = EXCLUDED.created_at, updated_at = EXCLUDED.updated_at,
	status_changed_at = EXCLUDED.status_changed_at, deleted_at = EXCLUDED.deleted_at
WHERE workspaces.last_stream_seq < EXCLUDED.last_stream_seq`

// insertDeadLettersSQL records quarantined messages in table; once each,
// by stream sequence, unless the table has no key yet (a rebuild's, whose
// indexes are built after its rows are in).
func insertDeadLettersSQL(table string, keyed bool) string {
	q := `INSERT INTO ` + table + ` (stream_seq, subject, reason, error, size, data, stream_time)
SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::bytea[], $7::timestamptz[])`
	if keyed {
		q += ` ON CONFLICT (stream_seq) DO NOTHING`
	}
	return q
}

// deadLetters are the rows of msgs' quarantined messages.
func deadLetters(msgs []message) []deadLetterRow {
	var out []deadLetterRow
	for _, m := range msgs {
		if m.dead != nil {
			out = append(out, deadLetterOf(m.dead))
		}
	}
	return out
}

func deadLetterColumns(rows []deadLetterRow) []any {
	n := len(rows)
	var (
		seq, size               = make([]int64, n), make([]int64, n)
		subject, reason, errMsg = make([]string, n), make([]string, n), make([]string, n)
		data                    = make([][]byte, n)
		at                      = make([]time.Time, n)
	)
	for i, r := range rows {
		seq[i], subject[i], reason[i], errMsg[i], size[i], data[i], at[i] = r.StreamSeq, r.Subject, r.Reason, r.Error, r.Size, r.Data, r.Time
	}
	return []any{seq, subject, reason, errMsg, size, data, at}
}

func eventColumns(rows []eventRow) []any {
	n := len(rows)
	var (
		streamSeq, seq, gen, specV          = make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n)
		id, ws, typ, from, to, payload, cmd = make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		reason, actor                       = make([]*string, n), make([]*string, n)
		exit                                = make([]*int32, n)
		at                                  = make([]time.Time, n)
	)
	for i, r := range rows {
		streamSeq[i], id[i], ws[i], seq[i], typ[i], gen[i], specV[i] = r.StreamSeq, r.EventID, r.Workspace, r.Seq, r.Type, r.Generation, r.SpecVersion
		from[i], to[i], reason[i], exit[i], payload[i], cmd[i], actor[i], at[i] = r.FromStatus, r.ToStatus, r.Reason, r.ExitCode, r.Payload, r.CommandID, r.Actor, r.Time
	}
	return []any{streamSeq, id, ws, seq, typ, gen, specV, from, to, reason, exit, payload, cmd, actor, at}
}

func commandColumns(rows []commandRow) []any {
	n := len(rows)
	var (
		id, ws, typ, outcome, state = make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		actor, code, msg, reason    = make([]*string, n), make([]*string, n), make([]*string, n), make([]*string, n)
		received, decided           = make([]time.Time, n), make([]time.Time, n)
		evStream, eventSeq, cmdGen  = make([]*int64, n), make([]*int64, n), make([]*int64, n)
		gen, outSeq                 = make([]int64, n), make([]int64, n)
	)
	for i, r := range rows {
		id[i], ws[i], typ[i], actor[i], received[i], decided[i], outcome[i] = r.CommandID, r.Workspace, r.Type, r.Actor, r.ReceivedAt, r.DecidedAt, r.Outcome
		code[i], msg[i], reason[i], eventSeq[i], gen[i], cmdGen[i], state[i], outSeq[i] = r.RejectionCode, r.RejectionMsg, r.Reason, r.EventSeq, r.Generation, r.CommandGeneration, r.State, r.OutcomeStreamSeq
		evStream[i] = r.EventStreamSeq
	}
	return []any{id, ws, typ, actor, received, decided, outcome, code, msg, reason, evStream, eventSeq, gen, cmdGen, state, outSeq}
}

func workspaceColumns(rows []*workspaceRow) ([]any, error) {
	n := len(rows)
	var (
		id, status, spec, image           = make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		gen, specV, attempt, evSeq, stSeq = make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n)
		lastErr, container                = make([]*string, n), make([]*string, n)
		created, updated, changed         = make([]time.Time, n), make([]time.Time, n), make([]time.Time, n)
		deleted                           = make([]*time.Time, n)
	)
	for i, r := range rows {
		var err error
		if spec[i], err = specJSON(r); err != nil {
			return nil, err
		}
		id[i], status[i], gen[i], specV[i], attempt[i], image[i] = r.ID, r.Status, r.Generation, r.SpecVersion, r.Attempt, r.Image
		lastErr[i], evSeq[i], stSeq[i], created[i], updated[i], changed[i], deleted[i] = r.LastError, r.LastEventSeq, r.LastStreamSeq, r.CreatedAt, r.UpdatedAt, r.ChangedAt, r.DeletedAt
		container[i] = r.ContainerID
	}
	return []any{id, status, gen, specV, attempt, spec, image, lastErr, evSeq, stSeq, created, updated, changed, deleted, container}, nil
}
