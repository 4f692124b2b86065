package bench

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/turnstile-dev/turnstile/fsm"
)

// schema is the peer's state: one row per workspace, one per event.
const schema = `
CREATE TABLE IF NOT EXISTS rl_workspaces (
	id                   text PRIMARY KEY,
	status               text NOT NULL,
	generation           bigint NOT NULL,
	spec_version         bigint NOT NULL,
	attempt_spec_version bigint NOT NULL,
	spec                 jsonb NOT NULL,
	container_id         text NOT NULL,
	last_error           text NOT NULL,
	seq                  bigint NOT NULL,
	updated_at           timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS rl_history (
	workspace    text NOT NULL,
	seq          bigint NOT NULL,
	type         text NOT NULL,
	from_status  text NOT NULL,
	to_status    text NOT NULL,
	generation   bigint NOT NULL,
	spec_version bigint NOT NULL,
	spec         jsonb,
	reason       text NOT NULL,
	command_id   text NOT NULL,
	actor        text NOT NULL,
	at           timestamptz NOT NULL,
	PRIMARY KEY (workspace, seq)
)`

const (
	workspaceColumns = `status, generation, spec_version, attempt_spec_version, spec, container_id, last_error, seq`

	selectForUpdate = `SELECT ` + workspaceColumns + ` FROM rl_workspaces WHERE id = $1 FOR UPDATE`
	selectRow       = `SELECT ` + workspaceColumns + ` FROM rl_workspaces WHERE id = $1`

	insertRow = `INSERT INTO rl_workspaces (id, ` + workspaceColumns + `, updated_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, now())`
	updateRow = `UPDATE rl_workspaces SET status = $2, generation = $3, spec_version = $4,
		attempt_spec_version = $5, spec = $6, container_id = $7, last_error = $8, seq = $9, updated_at = now()
		WHERE id = $1`
	insertHistory = `INSERT INTO rl_history (workspace, seq, type, from_status, to_status, generation,
		spec_version, spec, reason, command_id, actor, at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, now())`

	// succeeded is provision_succeeded as one generation-guarded statement:
	// the row changes only if it is provisioning at the reported
	// generation, and the history row is written from what it became. With
	// a newer spec pending it starts the one follow-up attempt instead, as
	// fsm.Decide does (spec_version never falls behind
	// attempt_spec_version, so "not pending" means equal). In an UPDATE's
	// SET every right-hand side reads the old row.
	succeeded = `WITH u AS (
		UPDATE rl_workspaces SET
			status = CASE WHEN spec_version > attempt_spec_version THEN 'provisioning' ELSE 'running' END,
			generation = CASE WHEN spec_version > attempt_spec_version THEN generation + 1 ELSE generation END,
			attempt_spec_version = spec_version,
			container_id = CASE WHEN spec_version > attempt_spec_version OR $3::text = '' THEN container_id ELSE $3::text END,
			seq = seq + 1,
			updated_at = now()
		WHERE id = $1 AND generation = $2 AND status = 'provisioning'
		RETURNING id, ` + workspaceColumns + `
	), h AS (
		INSERT INTO rl_history (workspace, seq, type, from_status, to_status, generation, spec_version, reason, command_id, actor, at)
		SELECT id, seq,
			CASE WHEN status = 'running' THEN 'workspace.provisioned' ELSE 'workspace.reprovision_started' END,
			'provisioning', status, generation, spec_version,
			CASE WHEN status = 'running' THEN $6::text
				ELSE 'spec version ' || spec_version || ' arrived during generation ' || (generation - 1) || '; applying it' END,
			$4, $5, now()
		FROM u
	)
	SELECT ` + workspaceColumns + ` FROM u`

	// uniqueViolation is SQLSTATE 23505: two creates of a new workspace
	// raced to insert its row; the loser decides again, under the lock.
	uniqueViolation = "23505"
)

// RowLock is the row-lock state machine on one PostgreSQL database. It is
// safe for concurrent use; its pool bounds the transactions in flight.
type RowLock struct {
	pool *pgxpool.Pool
}

// New returns the peer on pool; it starts nothing.
func New(pool *pgxpool.Pool) *RowLock { return &RowLock{pool: pool} }

// CreateSchema creates the peer's tables if they are missing.
func (r *RowLock) CreateSchema(ctx context.Context) error {
	if _, err := r.pool.Exec(ctx, schema); err != nil {
		return fmt.Errorf("bench: create schema: %w", err)
	}
	return nil
}

// Result is what became of one command.
type Result struct {
	Outcome fsm.Outcome
	// State is the workspace after the command (as it was, for one that
	// changed nothing).
	State     fsm.Workspace
	Event     *fsm.Event     // Accepted only
	Rejection *fsm.Rejection // Rejected only
	Reason    string         // stale and no-op outcomes
}

// Send decides and records cmd, giving it an id if it has none. A rejection
// is a Result, not an error; errors are a malformed command (a
// *fsm.Rejection with code invalid, nothing sent) and database failures, after
// which the command may or may not have been recorded.
func (r *RowLock) Send(ctx context.Context, cmd fsm.Command) (Result, error) {
	if cmd.ID == "" {
		cmd.ID = uuid.NewString()
	}
	if err := cmd.Validate(); err != nil {
		return Result{}, fmt.Errorf("bench: %w", err)
	}
	for attempt := 0; ; attempt++ {
		var (
			res Result
			err error
		)
		if cmd.Type == fsm.ProvisionSucceeded {
			res, err = r.succeed(ctx, cmd)
		} else {
			res, err = r.decide(ctx, cmd)
		}
		var pgErr *pgconn.PgError
		if err != nil && attempt < 3 && errors.As(err, &pgErr) && pgErr.Code == uniqueViolation {
			continue
		}
		if err != nil {
			return Result{}, fmt.Errorf("bench: %s %s: %w", cmd.Type, cmd.Workspace, err)
		}
		return res, nil
	}
}

// decide is one transaction: lock the row, decide, write the row and a
// history row, commit. A command that records nothing rolls back.
func (r *RowLock) decide(ctx context.Context, cmd fsm.Command) (Result, error) {
	tx, err := r.pool.Begin(ctx)
	if err != nil {
		return Result{}, err
	}
	defer func() { _ = tx.Rollback(ctx) }() // after Commit, a no-op
	w, exists, err := scanWorkspace(tx.QueryRow(ctx, selectForUpdate, cmd.Workspace), cmd.Workspace)
	if err != nil {
		return Result{}, err
	}
	d := fsm.Decide(w, cmd)
	res := Result{Outcome: d.Outcome, State: w, Event: d.Event, Rejection: d.Rejection, Reason: d.Reason}
	if d.Outcome != fsm.Accepted {
		return res, nil
	}
	n := fsm.Apply(w, *d.Event)
	row := []any{n.ID, string(n.Status), n.Generation, n.SpecVersion, n.AttemptSpecVersion, n.Spec, n.ContainerID, n.LastError, n.Seq}
	b := &pgx.Batch{}
	if exists {
		b.Queue(updateRow, row...)
	} else {
		b.Queue(insertRow, row...)
	}
	ev := d.Event
	b.Queue(insertHistory, n.ID, n.Seq, string(ev.Type), string(w.Status), string(n.Status), ev.Generation,
		ev.SpecVersion, ev.Spec, ev.Reason, cmd.ID, cmd.Actor)
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return Result{}, err
	}
	if err := tx.Commit(ctx); err != nil {
		return Result{}, err
	}
	res.State = n
	return res, nil
}

// succeed is provision_succeeded: one conditional statement, no lock held
// across round trips. When it matches nothing, the row as it is says why
// (stale, or a generation that does not exist yet).
func (r *RowLock) succeed(ctx context.Context, cmd fsm.Command) (Result, error) {
	for {
		n, ok, err := scanWorkspace(r.pool.QueryRow(ctx, succeeded, cmd.Workspace, cmd.Generation,
			cmd.ContainerID, cmd.ID, cmd.Actor, cmd.Reason), cmd.Workspace)
		if err != nil {
			return Result{}, err
		}
		if ok {
			ev := &fsm.Event{Type: fsm.Provisioned, Generation: n.Generation, SpecVersion: n.SpecVersion,
				ContainerID: cmd.ContainerID, Reason: cmd.Reason}
			if n.Status == fsm.Provisioning {
				ev = &fsm.Event{Type: fsm.ReprovisionStarted, Generation: n.Generation, SpecVersion: n.SpecVersion,
					Reason: fmt.Sprintf("spec version %d arrived during generation %d; applying it", n.SpecVersion, cmd.Generation)}
			}
			return Result{Outcome: fsm.Accepted, State: n, Event: ev}, nil
		}
		w, _, err := scanWorkspace(r.pool.QueryRow(ctx, selectRow, cmd.Workspace), cmd.Workspace)
		if err != nil {
			return Result{}, err
		}
		d := fsm.Decide(w, cmd)
		if d.Outcome == fsm.Accepted {
			// The row reached the reported generation after the update
			// looked: a report sent before its own attempt was recorded.
			// Try again against the row as it is now.
			continue
		}
		return Result{Outcome: d.Outcome, State: w, Rejection: d.Rejection, Reason: d.Reason}, nil
	}
}

// Get returns a workspace's state; one never created has the zero state.
func (r *RowLock) Get(ctx context.Context, id string) (fsm.Workspace, error) {
	w, _, err := scanWorkspace(r.pool.QueryRow(ctx, selectRow, id), id)
	if err != nil {
		return fsm.Workspace{}, fmt.Errorf("bench: get %s: %w", id, err)
	}
	return w, nil
}

// HistoryRow is one recorded event.
type HistoryRow struct {
	Seq        uint64
	Type       fsm.EventType
	From, To   fsm.Status
	Generation uint64
	CommandID  string
}

// History returns a workspace's events in order.
func (r *RowLock) History(ctx context.Context, id string) ([]HistoryRow, error) {
	rows, err := r.pool.Query(ctx, `SELECT seq, type, from_status, to_status, generation, command_id
		FROM rl_history WHERE workspace = $1 ORDER BY seq`, id)
	if err != nil {
		return nil, fmt.Errorf("bench: history %s: %w", id, err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (HistoryRow, error) {
		var h HistoryRow
		var typ, from, to string
		err := row.Scan(&h.Seq, &typ, &from, &to, &h.Generation, &h.CommandID)
		h.Type, h.From, h.To = fsm.EventType(typ), fsm.Status(from), fsm.Status(to)
		return h, err
	})
	if err != nil {
		return nil, fmt.Errorf("bench: history %s: %w", id, err)
	}
	return out, nil
}

// scanWorkspace reads one row of workspaceColumns; ok is false when there
// was none, and w is then the zero state of id.
func scanWorkspace(row pgx.Row, id string) (w fsm.Workspace, ok bool, err error) {
	w.ID = id
	var status string
	err = row.Scan(&status, &w.Generation, &w.SpecVersion, &w.AttemptSpecVersion, &w.Spec,
		&w.ContainerID, &w.LastError, &w.Seq)
	if errors.Is(err, pgx.ErrNoRows) {
		return fsm.Workspace{ID: id}, false, nil
	}
	if err != nil {
		return fsm.Workspace{}, false, err
	}
	w.Status = fsm.Status(status)
	return w, true, nil
}
