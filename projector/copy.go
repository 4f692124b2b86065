package projector

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// A rebuild writes its tables with COPY in PostgreSQL's binary format,
// encoded here rather than value by value through pgx's type map: the
// rows have fixed types, and the generic path cost more CPU than the
// server's side of the copy. The encodings are pgx's own (a timestamptz is
// microseconds since 2000-01-01, truncated; a jsonb is version 1 and the
// text), so a rebuilt row is the row the incremental path writes.

// copyTable copies every batch from rows into table (columns cols, each
// row written by encode) with one COPY ... FREEZE, and returns the number
// of rows. FREEZE needs the table created or truncated in the same
// transaction; the rows then need no later pass to set their hint bits.
// It stops with ctx's error when ctx ends before rows is closed.
func copyTable[R any](ctx context.Context, tx pgx.Tx, table string, cols []string, rows <-chan []R,
	encode func([]byte, *R) []byte, free chan<- []R) (int64, error) {
	sql := fmt.Sprintf(`COPY %s (%s) FROM STDIN (FORMAT binary, FREEZE)`,
		pgx.Identifier{rebuildSchema, table}.Sanitize(), strings.Join(cols, ", "))
	r := &copyReader[R]{ctx: ctx, rows: rows, encode: encode, free: free, buf: append([]byte(nil), copyHeader...)}
	tag, err := tx.Conn().PgConn().CopyFrom(ctx, r, sql)
	if err != nil {
		return 0, fmt.Errorf("copy %s: %w", table, err)
	}
	return tag.RowsAffected(), nil
}

// copyHeader opens a binary COPY: signature, flags, header extension.
const copyHeader = "PGCOPY\n\xff\r\n\x00" + "\x00\x00\x00\x00" + "\x00\x00\x00\x00"

// copyReader encodes batches of rows as a COPY stream, a batch at a time.
type copyReader[R any] struct {
	ctx    context.Context
	rows   <-chan []R
	encode func([]byte, *R) []byte
	free   chan<- []R // takes batches encoded, if it has room
	buf    []byte
	off    int
	done   bool
}

func (r *copyReader[R]) Read(p []byte) (int, error) {
	for r.off == len(r.buf) {
		if r.done {
			return 0, io.EOF
		}
		r.buf, r.off = r.buf[:0], 0
		select {
		case batch, ok := <-r.rows:
			if !ok {
				if err := r.ctx.Err(); err != nil { // the rows were cut short
					return 0, err
				}
				r.buf, r.done = append(r.buf, 0xff, 0xff), true // the trailer: a row of -1 fields
				break
			}
			for i := range batch {
				r.buf = r.encode(r.buf, &batch[i])
			}
			if r.free != nil {
				clear(batch[:cap(batch)]) // no stale strings kept alive
				select {
				case r.free <- batch[:0]:
				default:
				}
			}
		case <-r.ctx.Done():
			return 0, r.ctx.Err()
		}
	}
	n := copy(p, r.buf[r.off:])
	r.off += n
	return n, nil
}

// Field encoders: each appends one field, its length first (-1: NULL).

func fieldCount(b []byte, n int) []byte { return binary.BigEndian.AppendUint16(b, uint16(n)) }

func fieldNull(b []byte) []byte { return binary.BigEndian.AppendUint32(b, 0xffffffff) }

func fieldInt8(b []byte, v int64) []byte {
	b = binary.BigEndian.AppendUint32(b, 8)
	return binary.BigEndian.AppendUint64(b, uint64(v))
}

func fieldInt8Null(b []byte, v *int64) []byte {
	if v == nil {
		return fieldNull(b)
	}
	return fieldInt8(b, *v)
}

func fieldInt4Null(b []byte, v *int32) []byte {
	if v == nil {
		return fieldNull(b)
	}
	b = binary.BigEndian.AppendUint32(b, 4)
	return binary.BigEndian.AppendUint32(b, uint32(*v))
}

func fieldText(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
	return append(b, s...)
}

func fieldTextNull(b []byte, s *string) []byte {
	if s == nil {
		return fieldNull(b)
	}
	return fieldText(b, *s)
}

func fieldJSONB(b []byte, doc string) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(doc)+1))
	b = append(b, 1)
	return append(b, doc...)
}

// unixToY2K is the microseconds from 1970-01-01 to 2000-01-01, PostgreSQL's
// epoch.
const unixToY2K = 946_684_800 * 1_000_000

func fieldTime(b []byte, t time.Time) []byte {
	return fieldInt8(b, t.Unix()*1_000_000+int64(t.Nanosecond())/1000-unixToY2K)
}

func fieldTimeNull(b []byte, t *time.Time) []byte {
	if t == nil {
		return fieldNull(b)
	}
	return fieldTime(b, *t)
}

// The tables' columns in the order the encoders below write them.
var (
	eventCopyColumns = []string{"stream_seq", "event_id", "workspace_id", "seq", "type", "generation",
		"spec_version", "from_status", "to_status", "reason", "exit_code", "payload", "command_id", "actor", "time"}
	commandCopyColumns = []string{"command_id", "workspace_id", "type", "actor", "received_at", "decided_at",
		"outcome", "rejection_code", "rejection_message", "reason", "event_stream_seq", "event_seq", "generation",
		"command_generation", "state", "outcome_stream_seq"}
	workspaceCopyColumns = []string{"id", "status", "generation", "spec_version", "attempt_spec_version", "spec",
		"image", "last_error", "last_event_seq", "last_stream_seq", "created_at", "updated_at", "status_changed_at",
		"deleted_at", "container_id"}
)

func encodeEvent(b []byte, r *eventRow) []byte {
	b = fieldCount(b, 15)
	b = fieldInt8(b, r.StreamSeq)
	b = fieldText(b, r.EventID)
	b = fieldText(b, r.Workspace)
	b = fieldInt8(b, r.Seq)
	b = fieldText(b, r.Type)
	b = fieldInt8(b, r.Generation)
	b = fieldInt8(b, r.SpecVersion)
	b = fieldText(b, r.FromStatus)
	b = fieldText(b, r.ToStatus)
	b = fieldTextNull(b, r.Reason)
	b = fieldInt4Null(b, r.ExitCode)
	b = fieldJSONB(b, r.Payload)
	b = fieldText(b, r.CommandID)
	b = fieldTextNull(b, r.Actor)
	return fieldTime(b, r.Time)
}

func encodeCommand(b []byte, r *commandRow) []byte {
	b = fieldCount(b, 16)
	b = fieldText(b, r.CommandID)
	b = fieldText(b, r.Workspace)
	b = fieldText(b, r.Type)
	b = fieldTextNull(b, r.Actor)
	b = fieldTime(b, r.ReceivedAt)
	b = fieldTime(b, r.DecidedAt)
	b = fieldText(b, r.Outcome)
	b = fieldTextNull(b, r.RejectionCode)
	b = fieldTextNull(b, r.RejectionMsg)
	b = fieldTextNull(b, r.Reason)
	b = fieldInt8Null(b, r.EventStreamSeq)
	b = fieldInt8Null(b, r.EventSeq)
	b = fieldInt8(b, r.Generation)
	b = fieldInt8Null(b, r.CommandGeneration)
	b = fieldText(b, r.State)
	return fieldInt8(b, r.OutcomeStreamSeq)
}

// specRow is a workspace row with its spec's JSON, ready to copy.
type specRow struct {
	*workspaceRow
	spec string
}

func encodeWorkspace(b []byte, r *specRow) []byte {
	b = fieldCount(b, 15)
	b = fieldText(b, r.ID)
	b = fieldText(b, r.Status)
	b = fieldInt8(b, r.Generation)
	b = fieldInt8(b, r.SpecVersion)
	b = fieldInt8(b, r.Attempt)
	b = fieldJSONB(b, r.spec)
	b = fieldText(b, r.Image)
	b = fieldTextNull(b, r.LastError)
	b = fieldInt8(b, r.LastEventSeq)
	b = fieldInt8(b, r.LastStreamSeq)
	b = fieldTime(b, r.CreatedAt)
	b = fieldTime(b, r.UpdatedAt)
	b = fieldTime(b, r.ChangedAt)
	b = fieldTimeNull(b, r.DeletedAt)
	return fieldTextNull(b, r.ContainerID)
}
