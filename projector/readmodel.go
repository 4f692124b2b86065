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

// GetWorkspace reads one workspace. It returns ErrNotFound if the read
// model has no row for id.
func GetWorkspace(ctx context.Context, q Querier, id string) (Workspace, error) {
	var (
		w                       Workspace
		status, spec            string
		container, lastErr      *string
		gen, specV, att, es, ss int64
	)
	err := q.QueryRow(ctx, `SELECT id, status, generation, spec_version, attempt_spec_version, spec::text,
		container_id, last_error, last_event_seq, last_stream_seq, created_at, updated_at, status_changed_at, deleted_at
		FROM workspaces WHERE id = $1`, id).Scan(&w.ID, &status, &gen, &specV, &att, &spec, &container, &lastErr,
		&es, &ss, &w.CreatedAt, &w.UpdatedAt, &w.StatusChangedAt, &w.DeletedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return w, fmt.Errorf("workspace %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return w, fmt.Errorf("read workspace %s: %w", id, err)
	}
	if err := json.Unmarshal([]byte(spec), &w.Spec); err != nil {
		return w, fmt.Errorf("read workspace %s: spec: %w", id, err)
	}
	w.Status, _ = fsm.ParseStatus(status)
	w.Generation, w.SpecVersion, w.AttemptSpecVersion = uint64(gen), uint64(specV), uint64(att)
	w.LastEventSeq, w.LastStreamSeq = uint64(es), uint64(ss)
	if container != nil {
		w.ContainerID = *container
	}
	if lastErr != nil {
		w.LastError = *lastErr
	}
	return w, nil
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
