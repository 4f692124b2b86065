package projector_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/stdlib"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/migrations"
	"github.com/turnstile-dev/turnstile/projector"
)

// retention is the tests' --rejected-retention: short, so that refused
// outcomes expire while the test waits (the duplicate window must be
// shorter still).
const retention = 2 * time.Second

func newExpiringEnv(tb testing.TB) *env {
	return newEnvOn(tb, pg, events.StreamOptions{DuplicateWindow: time.Second, RejectedRetention: retention})
}

// lifecycle is five accepted commands of one workspace.
func lifecycle() []fsm.Command {
	exit0 := 0
	return []fsm.Command{
		{Type: fsm.Create, Spec: &fsm.Spec{Image: "registry.local/dev:1"}},
		{Type: fsm.ProvisionSucceeded, ContainerID: "ctr-1"},
		{Type: fsm.ContainerExited, ExitCode: &exit0},
		{Type: fsm.Start},
		{Type: fsm.ProvisionSucceeded, ContainerID: "ctr-2"},
	}
}

// refuse commits a rejected outcome for workspace ws as the engine does:
// with a Nats-TTL of the stream's retention.
func (e *env) refuse(tb testing.TB, ws, id string) {
	tb.Helper()
	now := time.Now().UTC().Truncate(time.Microsecond)
	o := events.OutcomeRecord{CommandID: id, Workspace: ws, CommandType: fsm.Start, Actor: "gen", Outcome: fsm.Rejected,
		Rejection: &fsm.Rejection{Code: fsm.CodeBusy, Message: "busy"}, ReceivedAt: now, DecidedAt: now}
	res, _ := e.store.Commit(context.Background(), []events.Write{{Outcome: o}}, events.CommitOptions{})
	if res[0].Err != nil || res[0].Existing != nil {
		tb.Fatalf("commit refused outcome %s: %+v", id, res[0])
	}
}

// waitExpired waits until the outcomes of ids have left the stream.
func (e *env) waitExpired(tb testing.TB, ids ...string) {
	tb.Helper()
	waitFor(tb, 30*time.Second, "refused outcomes to expire", func(ctx context.Context) (bool, error) {
		for _, id := range ids {
			if _, ok, err := e.store.Outcome(ctx, id); err != nil || ok {
				return false, err
			}
		}
		return true, nil
	})
}

// publishWithRefusals publishes the histories of ws-a and ws-b with
// refused outcomes between their messages (r-mid-*) and last (r-end),
// and returns the refused command ids.
func (e *env) publishWithRefusals(tb testing.TB) []string {
	tb.Helper()
	a := history(tb, e.names, "ws-a", lifecycle(), nil)
	b := history(tb, e.names, "ws-b", lifecycle(), nil)
	var ids []string
	for i := range a {
		publishAll(tb, e.js, a[i], b[i])
		if i%3 == 1 {
			id := "r-mid-" + string(rune('a'+i))
			e.refuse(tb, "ws-a", id)
			ids = append(ids, id)
		}
	}
	e.refuse(tb, "ws-b", "r-end")
	return append(ids, "r-end")
}

func (e *env) rowCount(tb testing.TB, q string, args ...any) int {
	tb.Helper()
	var n int
	if err := e.pool.QueryRow(context.Background(), q, args...).Scan(&n); err != nil {
		tb.Fatal(err)
	}
	return n
}

// A projector that meets the stream after refused outcomes expired (a
// fresh read model, or one further behind than the retention) passes
// their holes and fills; the outcomes it applied before they expired stay.
func TestProjectorPassesExpiredOutcomes(t *testing.T) {
	e := newExpiringEnv(t)
	// Applied live, before it expires: its row stays.
	publishAll(t, e.js, history(t, e.names, "ws-early", lifecycle()[:1], nil)...)
	e.refuse(t, "ws-early", "r-early")
	p := e.projector(t, nil)
	stop := run(t, p)
	e.waitCaughtUp(t, 30*time.Second)
	stop()

	refused := e.publishWithRefusals(t)
	e.waitExpired(t, append(refused, "r-early")...)
	if st, err := e.store.State(context.Background()); err != nil || st.Deleted == 0 {
		t.Fatalf("stream state %+v, %v: want holes in the middle", st, err)
	}
	for name, url := range map[string]string{"behind": "", "fresh": pg.NewDatabase(t)} {
		t.Run(name, func(t *testing.T) {
			e := *e
			if url != "" {
				e.pool = openPool(t, url)
				db := stdlib.OpenDBFromPool(e.pool)
				defer db.Close()
				if err := migrations.Up(context.Background(), db); err != nil {
					t.Fatal(err)
				}
			}
			reg := prometheus.NewRegistry()
			p := e.projector(t, func(c *projector.Config) { c.Registerer = reg })
			run(t, p)
			waitFor(t, 30*time.Second, "ws-a and ws-b applied", func(ctx context.Context) (bool, error) {
				var n int
				err := e.pool.QueryRow(ctx, `SELECT count(*) FROM workspaces WHERE id IN ('ws-a', 'ws-b') AND last_event_seq = 5`).Scan(&n)
				return n == 2, err
			})
			if n := e.rowCount(t, `SELECT count(*) FROM workspace_events WHERE workspace_id IN ('ws-a', 'ws-b')`); n != 10 {
				t.Fatalf("%d events of ws-a and ws-b, want 10", n)
			}
			if n := e.rowCount(t, `SELECT count(*) FROM commands WHERE command_id = ANY($1)`, refused); n != 0 {
				t.Fatalf("%d rows of expired outcomes, want none", n)
			}
			early := e.rowCount(t, `SELECT count(*) FROM commands WHERE command_id = 'r-early'`)
			if want := map[string]int{"behind": 1, "fresh": 0}[name]; early != want {
				t.Fatalf("%d rows of r-early, want %d", early, want)
			}
			// The last refused outcome expired too: nothing is left to apply.
			waitFor(t, 10*time.Second, "no lag", func(ctx context.Context) (bool, error) {
				l, err := p.Lag(ctx)
				return err == nil && l.Messages == 0 && l.Behind == 0, err
			})
			if got := metric(t, reg, "turnstile_projector_skipped_sequences_total"); got < float64(len(refused)-1) {
				t.Fatalf("skipped %v sequences, want at least %d", got, len(refused)-1)
			}
		})
	}
}

// A rebuild after refused outcomes expired succeeds, and its read model is
// the live one but for the expired outcomes' rows.
func TestRebuildAfterOutcomesExpired(t *testing.T) {
	e := newExpiringEnv(t)
	refused := e.publishWithRefusals(t)
	publishAll(t, e.js, history(t, e.names, "ws-c", lifecycle()[:2], nil)...) // the stream ends on a kept message
	p := e.projector(t, nil)
	stop := run(t, p)
	e.waitCaughtUp(t, 30*time.Second)
	stop()
	live := dump(t, e.pool)
	if n := e.rowCount(t, `SELECT count(*) FROM commands WHERE command_id = ANY($1)`, refused); n != len(refused) {
		t.Fatalf("live read model has %d of the %d refused outcomes", n, len(refused))
	}
	e.waitExpired(t, refused...)

	stats, err := p.Rebuild(context.Background(), nil)
	if err != nil {
		t.Fatalf("rebuild after outcomes expired: %v", err)
	}
	if stats.Skipped != uint64(len(refused)) {
		t.Fatalf("rebuild skipped %d sequences, want %d", stats.Skipped, len(refused))
	}
	rebuilt := dump(t, e.pool)
	var kept []string
	for _, row := range live["commands"] {
		expired := false
		for _, id := range refused {
			expired = expired || strings.Contains(row, `"command_id": "`+id+`"`)
		}
		if !expired {
			kept = append(kept, row)
		}
	}
	if len(kept) != len(live["commands"])-len(refused) {
		t.Fatalf("found %d expired rows among the live commands, want %d", len(live["commands"])-len(kept), len(refused))
	}
	live["commands"] = kept
	assertSameModel(t, live, rebuilt)
}

// logged records the projector's log lines.
type logged struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logged) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(b)
}

func (l *logged) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// An event missing from the stream (deleted, not expired) is still a gap:
// the rebuild refuses the stream naming the workspace, and the projector
// stops at that workspace's next event. A workspace whose seq skips ahead
// with nothing missing before it (a forged envelope) is applied, as before.
func TestMissingEventIsAGap(t *testing.T) {
	e := withMissingEvent(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := e.projector(t, nil).Rebuild(ctx, nil)
	var gap *projector.GapError
	if !errors.Is(err, projector.ErrGap) || !errors.As(err, &gap) || gap.Workspace != "ws-a" || gap.Seq != 3 || gap.After != 1 {
		t.Fatalf("rebuild without ws-a's event 2: %v, want a GapError of ws-a, seq 3 after 1", err)
	}
	if _, err := e.checkpoint(ctx); !errors.Is(err, projector.ErrNotFound) {
		t.Fatalf("checkpoint: %v: a refused rebuild must write none", err)
	}

	projectUpToTheGap(t, e, 4) // the gap's batch is not the first
}

// The projector keeps what precedes a gap whether or not the same batch
// holds it: where batches end is timing (BatchWait). Here one batch holds
// the whole stream.
func TestGapInsideABatch(t *testing.T) {
	projectUpToTheGap(t, withMissingEvent(t), 1000)
}

// withMissingEvent is a stream where ws-a's event 2 is gone (deleted) and
// an expired outcome's hole lies beside it, and ws-b's event 3 claims seq
// 7 with nothing missing before it.
func withMissingEvent(t *testing.T) *env {
	t.Helper()
	e := newExpiringEnv(t)
	a := history(t, e.names, "ws-a", lifecycle(), nil)
	// ws-b's third event claims seq 7: nothing is missing before it.
	b := history(t, e.names, "ws-b", lifecycle()[:3], func(i, _ int, s string) string {
		if i == 2 {
			return strings.ReplaceAll(s, `"seq":3`, `"seq":7`) // the envelope's and its state's
		}
		return s
	})
	publishAll(t, e.js, b...)
	publishAll(t, e.js, a...)
	e.refuse(t, "ws-a", "r-1") // a hole, once expired, beside the missing event
	publishAll(t, e.js, history(t, e.names, "ws-c", lifecycle()[:1], nil)...)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// Delete ws-a's second event: stream seq len(b) + 3.
	stream, err := e.js.Stream(ctx, e.names.EventStream())
	if err != nil {
		t.Fatal(err)
	}
	missing := uint64(len(b) + 3)
	m, err := stream.GetMsg(ctx, missing)
	if err != nil || m.Subject != e.names.Event("ws-a") || !strings.Contains(string(m.Data), `"seq":2`) {
		t.Fatalf("stream seq %d: %v %s, want ws-a's event 2", missing, err, m.Data)
	}
	if err := stream.DeleteMsg(ctx, missing); err != nil {
		t.Fatal(err)
	}
	e.waitExpired(t, "r-1")
	return e
}

// projectUpToTheGap runs the projector in batches of batchSize over
// withMissingEvent's stream: it reports ws-a's gap and holds all before it.
func projectUpToTheGap(t *testing.T, e *env, batchSize int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var log logged
	p := e.projector(t, func(c *projector.Config) {
		c.Logger = slog.New(slog.NewTextHandler(&log, nil))
		c.BatchSize = batchSize
		c.BatchWait = time.Second // the batches are full ones
	})
	run(t, p)
	waitFor(t, 30*time.Second, "the projector to report ws-a's gap twice", func(context.Context) (bool, error) {
		return strings.Count(log.String(), "workspace ws-a: event seq 3") >= 2, nil
	})
	var seq int
	if err := e.pool.QueryRow(ctx, `SELECT last_event_seq FROM workspaces WHERE id = 'ws-a'`).Scan(&seq); err != nil || seq != 1 {
		t.Fatalf("ws-a at event %d (%v), want 1: the projector must not pass a missing event", seq, err)
	}
	if err := e.pool.QueryRow(ctx, `SELECT last_event_seq FROM workspaces WHERE id = 'ws-b'`).Scan(&seq); err != nil || seq != 7 {
		t.Fatalf("ws-b at event %d (%v), want 7: a skip with nothing missing is applied", seq, err)
	}
}

// An event no reader here can decode (a newer build's, during an upgrade,
// or garbage) is quarantined; the workspace's next event then skips its
// seq, and when an expired outcome's hole lies between the two that must
// not read as a missing event: the message is there, only unreadable.
// Rebuild and projector both pass it, and the workspace reaches its last
// event.
func TestQuarantinedEventIsNoGap(t *testing.T) {
	e := newExpiringEnv(t)
	msgs := history(t, e.names, "ws-q", lifecycle()[:3], func(i, _ int, s string) string {
		if i == 1 {
			return `{"this is": "no envelope"`
		}
		return s
	})
	publishAll(t, e.js, msgs[:2]...) // event 1 and its outcome
	e.refuse(t, "ws-q", "r-q")       // a hole, once expired, before the unreadable event
	publishAll(t, e.js, msgs[2:]...)
	e.waitExpired(t, "r-q")

	p := e.projector(t, nil)
	stop := run(t, p)
	e.waitCaughtUp(t, 30*time.Second)
	stop()
	if n := e.rowCount(t, `SELECT count(*) FROM workspaces WHERE id = 'ws-q' AND last_event_seq = 3`); n != 1 {
		t.Fatal("the projector did not bring ws-q to its event 3")
	}
	stats, err := p.Rebuild(context.Background(), nil)
	if err != nil {
		t.Fatalf("rebuild with a quarantined event and a hole before it: %v", err)
	}
	if stats.Quarantined != 1 || stats.Skipped != 1 {
		t.Fatalf("rebuild quarantined %d and skipped %d, want 1 and 1", stats.Quarantined, stats.Skipped)
	}
	if n := e.rowCount(t, `SELECT count(*) FROM workspaces WHERE id = 'ws-q' AND last_event_seq = 3`); n != 1 {
		t.Fatal("after the rebuild ws-q is not at its event 3")
	}
}
