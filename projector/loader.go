package projector

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"
)

// loader reads the stream and copies it into rebuildSchema.
type loader struct {
	p        *Projector
	conn     *pgx.Conn
	through  uint64
	total    uint64
	progress func(Progress)
	ws       map[string]*workspaceRow
	seen     map[string]bool // command ids: the first outcome wins
	lastTime time.Time
	stats    RebuildStats
}

type chunk struct {
	events   []eventRow
	commands []commandRow
}

// load reads messages 1..through: one goroutine fetches, two decode, one
// folds in stream order, and two copy (events and commands, each on its
// own connection), so that decoding and both COPYs overlap.
func (l *loader) load(ctx context.Context, stream jetstream.Stream) error {
	if l.through == 0 {
		return nil
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	chunks := make(chan chunk, 2)
	evs, cmds := make(chan []eventRow, 1), make(chan []commandRow, 1)
	errs := make(chan error, 3)
	go func() {
		defer close(chunks)
		errs <- l.read(ctx, stream, chunks)
	}()
	var copied struct{ events, commands int64 }
	fail := func(err error) error {
		if err != nil {
			cancel() // stop the reader early
		}
		return err
	}
	go func() {
		errs <- fail(l.copyAll(ctx, func(ctx context.Context, c *pgxpool.Conn) error {
			for rows := range evs {
				n, err := copyEvents(ctx, c.Conn(), rows)
				if err != nil {
					return err
				}
				copied.events += n
			}
			return nil
		}, func() {
			for range evs {
			}
		}))
	}()
	go func() {
		errs <- fail(l.copyAll(ctx, func(ctx context.Context, c *pgxpool.Conn) error {
			for rows := range cmds {
				n, err := copyCommands(ctx, c.Conn(), rows)
				if err != nil {
					return err
				}
				copied.commands += n
			}
			return nil
		}, func() {
			for range cmds {
			}
		}))
	}()
	read := 0
	for c := range chunks {
		evs <- c.events
		cmds <- c.commands
		read += len(c.events) + len(c.commands)
		l.progress(Progress{Phase: "read", Done: uint64(read), Total: l.total})
	}
	close(evs)
	close(cmds)
	var err error
	for range 3 {
		if e := <-errs; e != nil && err == nil {
			err = e
			cancel()
		}
	}
	l.stats.Events, l.stats.Commands = int(copied.events), int(copied.commands)
	l.stats.Messages = l.stats.Events + l.stats.Commands
	return err
}

// copyAll runs copy on a connection of its own; on failure it drains, so
// that load never blocks on a dead copier.
func (l *loader) copyAll(ctx context.Context, copy func(context.Context, *pgxpool.Conn) error, drain func()) error {
	err := l.p.cfg.Pool.AcquireFunc(ctx, func(c *pgxpool.Conn) error { return copy(ctx, c) })
	if err != nil {
		drain()
		return fmt.Errorf("rebuild: copy: %w", err)
	}
	return nil
}

// raw is an undecoded stream message.
type raw struct {
	seq     uint64
	subject string
	data    []byte
	time    time.Time
}

// decodeJob is a run of messages to decode and where the result goes.
type decodeJob struct {
	msgs []raw
	res  chan decoded
}

// decoded is a run of decoded messages, delivered in stream order.
type decoded struct {
	msgs []message
	err  error
}

// read fetches messages 1..through in runs, decodes the runs on two
// goroutines (decoding is most of a rebuild's CPU) and folds them in stream
// order into chunks for load to copy.
func (l *loader) read(ctx context.Context, stream jetstream.Stream, out chan<- chunk) error {
	const run = 1000
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	jobs := make(chan decodeJob)
	order := make(chan chan decoded, 8) // results in stream order
	fetchErr := make(chan error, 1)
	go func() {
		defer close(order)
		defer close(jobs)
		fetchErr <- l.fetch(ctx, stream, run, func(msgs []raw) bool {
			res := make(chan decoded, 1)
			select {
			case order <- res:
			case <-ctx.Done():
				return false
			}
			select {
			case jobs <- decodeJob{msgs, res}:
				return true
			case <-ctx.Done():
				res <- decoded{err: ctx.Err()} // the folder waits for every result
				return false
			}
		})
	}()
	var workers sync.WaitGroup
	for range 2 {
		workers.Go(func() {
			for j := range jobs {
				d := decoded{msgs: make([]message, 0, len(j.msgs))}
				for _, r := range j.msgs {
					m, err := l.p.dec.decode(r.seq, r.subject, r.data)
					if err != nil {
						d.err = fmt.Errorf("rebuild: %w", err)
						break
					}
					m.time = r.time
					d.msgs = append(d.msgs, m)
				}
				j.res <- d
			}
		})
	}
	var c chunk
	n := 0
	send := func() error {
		select {
		case out <- c:
		case <-ctx.Done():
			return ctx.Err()
		}
		c, n = chunk{}, 0
		return nil
	}
	var err error
	for res := range order {
		d := <-res
		if err == nil && d.err != nil {
			err = d.err
			cancel()
		}
		for _, m := range d.msgs {
			if err != nil {
				break
			}
			l.lastTime = m.time
			if err = l.fold(&c, m); err != nil {
				cancel()
				break
			}
			if n++; n >= copyChunk {
				if err = send(); err != nil {
					cancel()
				}
			}
		}
	}
	if ferr := <-fetchErr; err == nil {
		err = ferr
	}
	workers.Wait()
	if err == nil && n > 0 {
		err = send()
	}
	return err
}

// fetch reads messages 1..through and hands them on in runs of n; it
// stops early when hand returns false.
func (l *loader) fetch(ctx context.Context, stream jetstream.Stream, n int, hand func([]raw) bool) error {
	cons, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		return fmt.Errorf("rebuild: consumer: %w", err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(4096))
	if err != nil {
		return fmt.Errorf("rebuild: consume: %w", err)
	}
	defer it.Stop()
	buf := make([]raw, 0, n)
	for want := uint64(1); want <= l.through; want++ {
		m, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			return fmt.Errorf("rebuild: read: %w", err)
		}
		meta, err := m.Metadata()
		if err != nil {
			return fmt.Errorf("rebuild: read: %w", err)
		}
		if seq := meta.Sequence.Stream; seq != want {
			return fmt.Errorf("rebuild: %w: expected stream seq %d, got %d", ErrGap, want, seq)
		}
		buf = append(buf, raw{seq: want, subject: m.Subject(), data: m.Data(), time: meta.Timestamp})
		if len(buf) == n || want == l.through {
			if !hand(buf) {
				return ctx.Err()
			}
			buf = make([]raw, 0, n)
		}
	}
	return nil
}

// fold is the in-memory twin of store.apply: same rows, same rules.
func (l *loader) fold(c *chunk, m message) error {
	switch {
	case m.event != nil:
		w, e, err := fold(l.ws[m.event.Workspace], m.event)
		if err != nil {
			return fmt.Errorf("rebuild: %w", err)
		}
		l.ws[w.ID] = &w
		c.events = append(c.events, e)
	case m.outcome != nil:
		r := *m.outcome
		if l.seen[r.CommandID] {
			return nil
		}
		l.seen[r.CommandID] = true
		c.commands = append(c.commands, resolveEvent(l.ws[r.Workspace], r))
	}
	return nil
}

func copyEvents(ctx context.Context, conn *pgx.Conn, rows []eventRow) (int64, error) {
	if len(rows) == 0 {
		return 0, nil
	}
	cols := []string{"stream_seq", "event_id", "workspace_id", "seq", "type", "generation", "spec_version",
		"from_status", "to_status", "reason", "exit_code", "payload", "command_id", "actor", "time"}
	n, err := conn.CopyFrom(ctx, pgx.Identifier{rebuildSchema, "workspace_events"}, cols,
		pgx.CopyFromSlice(len(rows), func(i int) ([]any, error) {
			r := &rows[i]
			return []any{r.StreamSeq, r.EventID, r.Workspace, r.Seq, r.Type, r.Generation, r.SpecVersion,
				r.FromStatus, r.ToStatus, r.Reason, r.ExitCode, r.Payload, r.CommandID, r.Actor, r.Time}, nil
		}))
	if err != nil {
		return 0, fmt.Errorf("events: %w", err)
	}
	return n, nil
}

func copyCommands(ctx context.Context, conn *pgx.Conn, rows []commandRow) (int64, error) {
	if len(rows) == 0 {
		return 0, nil
	}
	cols := []string{"command_id", "workspace_id", "type", "actor", "received_at", "decided_at", "outcome",
		"rejection_code", "rejection_message", "reason", "event_stream_seq", "event_seq", "generation",
		"command_generation", "state", "outcome_stream_seq"}
	n, err := conn.CopyFrom(ctx, pgx.Identifier{rebuildSchema, "commands"}, cols,
		pgx.CopyFromSlice(len(rows), func(i int) ([]any, error) {
			r := &rows[i]
			return []any{r.CommandID, r.Workspace, r.Type, r.Actor, r.ReceivedAt, r.DecidedAt, r.Outcome,
				r.RejectionCode, r.RejectionMsg, r.Reason, r.EventStreamSeq, r.EventSeq, r.Generation,
				r.CommandGeneration, r.State, r.OutcomeStreamSeq}, nil
		}))
	if err != nil {
		return 0, fmt.Errorf("commands: %w", err)
	}
	return n, nil
}

// finish copies the folded workspaces and writes the checkpoint.
func (l *loader) finish(ctx context.Context) error {
	ids := make([]string, 0, len(l.ws))
	for id := range l.ws {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	cols := []string{"id", "status", "generation", "spec_version", "attempt_spec_version", "spec", "image",
		"last_error", "last_event_seq", "last_stream_seq", "created_at", "updated_at", "status_changed_at", "deleted_at",
		"container_id"}
	n, err := l.conn.CopyFrom(ctx, pgx.Identifier{rebuildSchema, "workspaces"}, cols,
		pgx.CopyFromSlice(len(ids), func(i int) ([]any, error) {
			r := l.ws[ids[i]]
			spec, err := specJSON(r)
			if err != nil {
				return nil, err
			}
			return []any{r.ID, r.Status, r.Generation, r.SpecVersion, r.Attempt, spec, r.Image, r.LastError,
				r.LastEventSeq, r.LastStreamSeq, r.CreatedAt, r.UpdatedAt, r.ChangedAt, r.DeletedAt, r.ContainerID}, nil
		}))
	if err != nil {
		return fmt.Errorf("rebuild: copy workspaces: %w", err)
	}
	l.stats.Workspaces = int(n)
	var msgTime *time.Time
	if l.through > 0 {
		msgTime = &l.lastTime
	}
	if _, err := l.conn.Exec(ctx, `INSERT INTO `+rebuildSchema+`.projector_checkpoint (name, stream_seq, msg_time, updated_at)
		VALUES ($1, $2, $3, $4)`, l.p.cfg.Name, int64(l.through), msgTime, l.p.cfg.Now()); err != nil {
		return fmt.Errorf("rebuild: checkpoint: %w", err)
	}
	l.stats.Through = l.through
	return nil
}

// resolve fills in the event references resolveEvent could not, as the
// incremental path does in SQL. It needs the indexes built.
func (l *loader) resolve(ctx context.Context) error {
	_, err := l.conn.Exec(ctx, `UPDATE `+rebuildSchema+`.commands c SET event_stream_seq =
		(SELECT e.stream_seq FROM `+rebuildSchema+`.workspace_events e WHERE e.workspace_id = c.workspace_id
			AND e.seq = c.event_seq AND e.stream_seq < c.outcome_stream_seq ORDER BY e.stream_seq LIMIT 1)
		WHERE c.event_seq IS NOT NULL AND c.event_stream_seq IS NULL`)
	if err != nil {
		return fmt.Errorf("rebuild: resolve events: %w", err)
	}
	return nil
}
