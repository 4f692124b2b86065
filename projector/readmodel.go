package projector

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/turnstile-dev/turnstile/fsm"
)

// Querier is what the read functions need: *pgxpool.Pool, *pgx.Conn and
// pgx.Tx all satisfy it.
type Querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

var (
	_ Querier = (*pgxpool.Pool)(nil)
	_ Querier = (*pgx.Conn)(nil)
	_ Querier = pgx.Tx(nil)
)

// ErrNotFound means the read model has no such workspace (yet).
var ErrNotFound = errors.New("not found in the read model")

// Workspace is a workspace as the read model shows it, with the point in
// its history the row reflects.
type Workspace struct {
	ID                 string
	Status             fsm.Status
	Generation         uint64
	SpecVersion        uint64
	AttemptSpecVersion uint64
	Spec               fsm.Spec
	ContainerID        string
	LastError          string
	// LastEventSeq is the workspace's event sequence the row reflects: it
	// is current up to and including that event.
	LastEventSeq uint64
	// LastStreamSeq is that event's stream sequence.
	LastStreamSeq   uint64
	CreatedAt       time.Time
	UpdatedAt       time.Time
	StatusChangedAt time.Time
	DeletedAt       *time.Time
}

// readColumns are the columns scanWorkspace reads, in its order.
const readColumns = `w.id, w.status, w.generation, w.spec_version, w.attempt_spec_version, w.spec::text,
	w.container_id, w.last_error, w.last_event_seq, w.last_stream_seq, w.created_at, w.updated_at, w.status_changed_at, w.deleted_at`

// scanWorkspace reads readColumns (after the columns before, if
// any) from row; it reports false when the row's id is NULL (a list's
// row that carries only the checkpoint).
func scanWorkspace(row pgx.Row, before ...any) (Workspace, bool, error) {
	var (
		w                       Workspace
		id, status, spec        *string
		container, lastErr      *string
		gen, specV, att, es, ss *int64
		created, upd, changed   *time.Time
	)
	dest := append(before, &id, &status, &gen, &specV, &att, &spec, &container, &lastErr, &es, &ss, &created, &upd, &changed, &w.DeletedAt)
	if err := row.Scan(dest...); err != nil {
		return w, false, err
	}
	if id == nil {
		return w, false, nil
	}
	w.ID = *id
	if spec != nil {
		if err := json.Unmarshal([]byte(*spec), &w.Spec); err != nil {
			return w, false, fmt.Errorf("spec: %w", err)
		}
	}
	if status != nil {
		w.Status, _ = fsm.ParseStatus(*status)
	}
	u := func(p *int64) uint64 {
		if p == nil {
			return 0
		}
		return uint64(*p)
	}
	t := func(p *time.Time) time.Time {
		if p == nil {
			return time.Time{}
		}
		return *p
	}
	w.Generation, w.SpecVersion, w.AttemptSpecVersion = u(gen), u(specV), u(att)
	w.LastEventSeq, w.LastStreamSeq = u(es), u(ss)
	w.CreatedAt, w.UpdatedAt, w.StatusChangedAt = t(created), t(upd), t(changed)
	if container != nil {
		w.ContainerID = *container
	}
	if lastErr != nil {
		w.LastError = *lastErr
	}
	return w, true, nil
}

// GetWorkspace reads one workspace. It returns ErrNotFound if the read
// model has no row for id.
func GetWorkspace(ctx context.Context, q Querier, id string) (Workspace, error) {
	w, _, err := scanWorkspace(q.QueryRow(ctx, `SELECT `+readColumns+` FROM workspaces w WHERE w.id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return w, fmt.Errorf("workspace %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return w, fmt.Errorf("read workspace %s: %w", id, err)
	}
	return w, nil
}

// RowsQuerier runs a query of many rows: *pgxpool.Pool, *pgx.Conn and
// pgx.Tx satisfy it.
type RowsQuerier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

var _ RowsQuerier = (*pgxpool.Pool)(nil)

// WorkspacePage is one page of ListWorkspaces.
type WorkspacePage struct {
	Workspaces []Workspace
	// Checkpoint is the stream sequence projector DefaultName had applied
	// in the snapshot the rows come from (0 if it never ran).
	Checkpoint uint64
}

// ListWorkspaces reads up to limit workspaces with an id after after (""
// from the first), ordered by id, in status (every status when it is
// ""), and the checkpoint they reflect: one statement, so one snapshot
// and one round trip, whatever the page's size.
func ListWorkspaces(ctx context.Context, q RowsQuerier, status fsm.Status, after string, limit int) (WorkspacePage, error) {
	// The checkpoint row is the left side, so an empty page still says
	// where the read model stands.
	rows, err := q.Query(ctx, `SELECT cp.stream_seq, `+readColumns+`
		FROM (SELECT coalesce((SELECT stream_seq FROM projector_checkpoint WHERE name = $4), 0) AS stream_seq) cp
		LEFT JOIN LATERAL (SELECT * FROM workspaces
			WHERE ($1 = '' OR status = $1) AND id > $2 ORDER BY id LIMIT $3) w ON true
		ORDER BY w.id`, string(status), after, limit, DefaultName)
	if err != nil {
		return WorkspacePage{}, fmt.Errorf("list workspaces: %w", err)
	}
	defer rows.Close()
	page := WorkspacePage{Workspaces: []Workspace{}}
	for rows.Next() {
		var cp int64
		w, ok, err := scanWorkspace(rows, &cp)
		if err != nil {
			return page, fmt.Errorf("list workspaces: %w", err)
		}
		page.Checkpoint = uint64(cp)
		if ok {
			page.Workspaces = append(page.Workspaces, w)
		}
	}
	if err := rows.Err(); err != nil {
		return page, fmt.Errorf("list workspaces: %w", err)
	}
	return page, nil
}

// CountByStatus counts the workspaces in each state (states without one
// are absent).
func CountByStatus(ctx context.Context, q RowsQuerier) (map[fsm.Status]int64, error) {
	rows, err := q.Query(ctx, `SELECT status, count(*) FROM workspaces GROUP BY status`)
	if err != nil {
		return nil, fmt.Errorf("count workspaces: %w", err)
	}
	defer rows.Close()
	out := map[fsm.Status]int64{}
	for rows.Next() {
		var st string
		var n int64
		if err := rows.Scan(&st, &n); err != nil {
			return nil, fmt.Errorf("count workspaces: %w", err)
		}
		s, _ := fsm.ParseStatus(st)
		out[s] = n
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("count workspaces: %w", err)
	}
	return out, nil
}

// Checkpoint is how far a projector has applied the stream.
type Checkpoint struct {
	Name      string
	StreamSeq uint64    // last stream sequence applied; 0: none
	MsgTime   time.Time // stream time of that message; zero if none
	UpdatedAt time.Time
}

// ReadCheckpoint reads projector name's checkpoint; ErrNotFound if the
// projector never ran.
func ReadCheckpoint(ctx context.Context, q Querier, name string) (Checkpoint, error) {
	c := Checkpoint{Name: name}
	var seq int64
	var msgTime *time.Time
	err := q.QueryRow(ctx, `SELECT stream_seq, msg_time, updated_at FROM projector_checkpoint WHERE name = $1`, name).
		Scan(&seq, &msgTime, &c.UpdatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return c, fmt.Errorf("checkpoint %s: %w", name, ErrNotFound)
	}
	if err != nil {
		return c, fmt.Errorf("read checkpoint %s: %w", name, err)
	}
	c.StreamSeq = uint64(seq)
	if msgTime != nil {
		c.MsgTime = *msgTime
	}
	return c, nil
}
