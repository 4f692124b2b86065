package projector_test

import (
	"context"
	"errors"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"

	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/projector"
)

// TestRebuildMatchesSlowDecoding projects a history with the events
// package's decoding alone, then rebuilds it with the fast path, which
// must give the same read model row for row, jsonb documents compared by
// PostgreSQL. The history has what the generator writes and envelopes and
// outcomes with every member set, escapes, non-ASCII text, exit code 0 and
// documents in forms the fast path leaves to the events package.
func TestRebuildMatchesSlowDecoding(t *testing.T) {
	e := newEnv(t)
	g := newGenerator(e.names, 30, 21)
	g.publish(t, e.js, 1000)
	publishAll(t, e.js, unusualMessages(t, e.names)...)
	g.publish(t, e.js, 200)
	slow := e.projector(t, nil)
	projector.DecodeSlowly(slow)
	stop := run(t, slow)
	e.waitCaughtUp(t, 30*time.Second)
	stop()
	stats := e.assertEqualsRebuild(t, e.projector(t, nil))
	var commands int
	if err := e.pool.QueryRow(context.Background(), `SELECT count(*) FROM commands`).Scan(&commands); err != nil {
		t.Fatal(err)
	}
	if stats.Commands != commands || stats.Messages != int(e.streamLast(t))-1 { // less the later outcome
		t.Fatalf("stats %+v: want %d commands, %d messages", stats, commands, e.streamLast(t)-1)
	}
}

// unusualMessages are two workspaces' histories with outcomes, as this
// build writes them and as other writers might have: ws-unusual's, in the
// form the fast path takes but for a few messages, and ws-escapes', with
// strings the fast path leaves to the events package.
func unusualMessages(tb testing.TB, names events.Names) []*nats.Msg {
	tb.Helper()
	exit0, exit137 := 0, 137
	out := history(tb, names, "ws-unusual", []fsm.Command{
		{Type: fsm.Create, Actor: "ünïcode", Spec: &fsm.Spec{Image: "registry.local/dev:1", CPUs: 1.5, MemoryBytes: 1 << 30,
			Env: map[string]string{"B": "ünïcode", "A": ""}, Labels: map[string]string{"team": "a"}}},
		{Type: fsm.ProvisionSucceeded, ContainerID: "ctr-1"},
		{Type: fsm.ContainerExited, ExitCode: &exit0, Reason: "exited"},
		{Type: fsm.Start},
		{Type: fsm.ProvisionFailed, Reason: "pull failed"},
		{Type: fsm.Configure, Spec: &fsm.Spec{CPUs: 0.0123}},
		{Type: fsm.Start},
		{Type: fsm.ProvisionSucceeded, ContainerID: "ctr-2"},
		{Type: fsm.ContainerExited, ExitCode: &exit137},
		{Type: fsm.Configure, Spec: &fsm.Spec{}},
		{Type: fsm.Delete},
		{Type: fsm.DeleteSucceeded},
		{Type: fsm.Create},
		{Type: fsm.Configure, Spec: &fsm.Spec{CPUs: 2.5, Labels: map[string]string{"b": "2"}}},
	}, func(i, last int, b string) string {
		// Forms the fast path must leave to the events package, in a
		// payload, which the events table keeps, and in the state of the
		// workspace's last event, which its row keeps.
		switch i {
		case 0: // a number as Go does not write it
			return strings.Replace(b, `"cpus":1.5`, `"cpus":1.50`, 1)
		case 1: // whitespace and members reordered: the fast path all the same
			return strings.Replace(strings.Replace(b, `{"id"`, " {\n \"workspace\" : \"ws-unusual\", \"id\"", 1),
				`"workspace":"ws-unusual",`, "", 1) + "\n"
		case 3: // a member omitempty would drop
			return strings.Replace(b, `"payload":{}`, `"payload":{"reason":""}`, 1)
		case last:
			return strings.ReplaceAll(b, `"cpus":2.5`, `"cpus":2.50`)
		}
		return b
	})
	out = append(out, history(tb, names, "ws-escapes", []fsm.Command{
		{Type: fsm.Create, Actor: "<actor>", Spec: &fsm.Spec{Env: map[string]string{"B": "x&y", "U": "\u2028"}}},
		{Type: fsm.ProvisionFailed, Reason: "pull <failed> & \"quoted\" \\ \t"},
		{Type: fsm.Delete},
	}, nil)...)
	t0 := time.Now().Add(-time.Hour).UTC()
	for i, rej := range []*fsm.Rejection{
		fsm.Decide(fsm.Workspace{ID: "ws-unusual", Status: fsm.Running, Generation: 1},
			fsm.Command{ID: "unusual-r0", Workspace: "ws-unusual", Type: fsm.Create}).Rejection,
		{Code: fsm.CodeBusy, Message: "busy now"}, // allowed: null
		fsm.Invalid(fsm.Start, "ünïcode <invalid>"),
	} {
		id := "unusual-r" + string(rune('0'+i))
		o := events.OutcomeRecord{CommandID: id, Workspace: "ws-unusual", CommandType: fsm.Create, Outcome: fsm.Rejected,
			Rejection: rej, Generation: 4, State: fsm.Provisioning, ReceivedAt: t0, DecidedAt: t0}
		b, err := events.EncodeOutcome(o)
		if err != nil {
			tb.Fatal(err)
		}
		out = append(out, &nats.Msg{Subject: names.Outcome(id), Data: b})
	}
	// A duplicate outcome (a redelivery after the dedupe window): the first
	// one counts.
	return append(out, &nats.Msg{Subject: out[1].Subject, Data: out[1].Data})
}

// history decides cmds for workspace ws and returns each event and outcome;
// edit, when not nil, rewrites the JSON of the i-th event (of last+1).
func history(tb testing.TB, names events.Names, ws string, cmds []fsm.Command, edit func(i, last int, b string) string) []*nats.Msg {
	tb.Helper()
	t0 := time.Now().Add(-time.Hour).UTC().Truncate(time.Microsecond).Add(789 * time.Nanosecond)
	var w fsm.Workspace
	var out []*nats.Msg
	for i, c := range cmds {
		c.ID, c.Workspace = ws+"-"+string(rune('a'+i)), ws
		if c.Type.IsSystem() {
			c.Generation = w.Generation
		}
		if c.Actor == "" {
			c.Actor = "gen"
		}
		d := fsm.Decide(w, c)
		if d.Outcome != fsm.Accepted {
			tb.Fatalf("%s in %s: %s %+v", c.Type, w.Status, d.Outcome, d.Rejection)
		}
		at := t0.Add(time.Duration(i) * time.Second)
		env := events.NewEnvelope(c.ID+"-e", w, *d.Event, c, at)
		b, err := events.Codec{}.Encode(env)
		if err != nil {
			tb.Fatal(err)
		}
		if edit != nil {
			b = []byte(edit(i, len(cmds)-1, string(b)))
		}
		out = append(out, &nats.Msg{Subject: names.Event(ws), Data: b})
		o := events.OutcomeRecord{CommandID: c.ID, Workspace: ws, CommandType: c.Type, Actor: c.Actor,
			Outcome: d.Outcome, EventSeq: env.Seq, Generation: env.State.Generation, State: env.State.Status,
			CommandGeneration: c.Generation, ReceivedAt: at, DecidedAt: at.Add(time.Microsecond)}
		if b, err = events.EncodeOutcome(o); err != nil {
			tb.Fatal(err)
		}
		out = append(out, &nats.Msg{Subject: names.Outcome(c.ID), Data: b})
		w = env.State
	}
	return out
}

// TestRebuildFailures: a rebuild that fails or is canceled leaves the live
// read model as it was and no rebuild schema behind.
func TestRebuildFailures(t *testing.T) {
	ctx := context.Background()
	schemas := func(t *testing.T, e *env) int {
		t.Helper()
		var n int
		if err := e.pool.QueryRow(ctx, `SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'turnstile\_%'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	projected := func(t *testing.T) (*env, *projector.Projector, map[string]string) {
		t.Helper()
		e := newEnv(t)
		newGenerator(e.names, 20, 31).publish(t, e.js, 3000)
		p := e.projector(t, nil)
		stop := run(t, p)
		e.waitCaughtUp(t, 30*time.Second)
		stop()
		return e, p, fingerprint(t, e.pool)
	}

	// An undecodable message no longer fails a rebuild: it is quarantined
	// (issue 12 item 5), as TestQuarantine checks.

	t.Run("Canceled", func(t *testing.T) {
		for _, phase := range []string{"read", "index", "swap"} {
			e, p, before := projected(t)
			cctx, cancel := context.WithCancel(ctx)
			_, err := p.Rebuild(cctx, func(pr projector.Progress) {
				if pr.Phase == phase {
					cancel()
				}
			})
			cancel()
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("canceled at %s: got %v, want context.Canceled", phase, err)
			}
			if after := fingerprint(t, e.pool); !maps.Equal(before, after) {
				t.Fatalf("canceled at %s: the read model changed", phase)
			}
			if n := schemas(t, e); n != 0 {
				t.Fatalf("canceled at %s: %d schemas left behind", phase, n)
			}
		}
	})

	// Canceled at any moment: before, during or after the swap.
	t.Run("CanceledAnytime", func(t *testing.T) {
		for _, after := range []time.Duration{0, time.Millisecond, 5 * time.Millisecond, 20 * time.Millisecond,
			50 * time.Millisecond, 100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond} {
			e, p, before := projected(t)
			cctx, cancel := context.WithCancel(ctx)
			timer := time.AfterFunc(after, cancel)
			_, err := p.Rebuild(cctx, nil)
			timer.Stop()
			cancel()
			switch {
			case err == nil: // swapped before the cancel
			case errors.Is(err, context.Canceled):
				if now := fingerprint(t, e.pool); !maps.Equal(before, now) {
					t.Fatalf("canceled after %v: the read model changed", after)
				}
			default:
				t.Fatalf("canceled after %v: %v", after, err)
			}
			if n := schemas(t, e); n != 0 {
				t.Fatalf("canceled after %v: %d schemas left behind", after, n)
			}
			if err := e.pool.QueryRow(ctx, `SELECT count(*) FROM workspaces`).Scan(new(int)); err != nil {
				t.Fatal(err)
			}
		}
	})

	t.Run("Unmigrated", func(t *testing.T) {
		e := newEnv(t)
		newGenerator(e.names, 5, 32).publish(t, e.js, 50)
		bare := openPool(t, pg.NewDatabase(t))
		p, err := projector.New(projector.Config{Store: e.store, Pool: bare})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.Rebuild(ctx, nil); err == nil || !strings.Contains(err.Error(), "migrat") {
			t.Fatalf("got %v, want an error about migrations", err)
		}
		var n int
		if err := bare.QueryRow(ctx, `SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'turnstile\_%'`).Scan(&n); err != nil || n != 0 {
			t.Fatalf("%d schemas left behind (%v)", n, err)
		}
	})

	t.Run("Concurrent", func(t *testing.T) {
		e, p, _ := projected(t)
		var wg sync.WaitGroup
		errs := make(chan error, 2)
		for range 2 {
			wg.Go(func() {
				_, err := p.Rebuild(ctx, nil)
				errs <- err
			})
		}
		wg.Wait()
		close(errs)
		var ok, busy int
		for err := range errs {
			switch {
			case err == nil:
				ok++
			case errors.Is(err, projector.ErrRebuildRunning):
				busy++
			default:
				t.Fatal(err)
			}
		}
		if ok < 1 || ok+busy != 2 || schemas(t, e) != 0 {
			t.Fatalf("%d succeeded, %d found another running, %d schemas left", ok, busy, schemas(t, e))
		}
	})
}

// TestRebuildEmpty rebuilds a read model from an empty stream.
func TestRebuildEmpty(t *testing.T) {
	e := newEnv(t)
	stats, err := e.projector(t, nil).Rebuild(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if stats.Messages != 0 || stats.Workspaces != 0 || stats.Through != 0 {
		t.Fatalf("stats %+v, want nothing", stats)
	}
	cp, err := e.checkpoint(context.Background())
	if err != nil || cp != 0 {
		t.Fatalf("checkpoint %d (%v), want 0", cp, err)
	}
}

// TestRebuildKeepsSchema: the rebuilt tables have the migrations' indexes
// and constraints, names included.
func TestRebuildKeepsSchema(t *testing.T) {
	e := newEnv(t)
	newGenerator(e.names, 10, 41).publish(t, e.js, 200)
	schema := func() []string {
		rows, err := e.pool.Query(context.Background(), `SELECT indexdef FROM pg_indexes WHERE schemaname = current_schema()
			UNION ALL SELECT conrelid::regclass || ' ' || conname || ' ' || pg_get_constraintdef(oid) FROM pg_constraint
			WHERE connamespace = current_schema()::regnamespace
			UNION ALL SELECT c.relname || ' ' || c.relpersistence::text FROM pg_class c
			WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind IN ('r', 'i')
			ORDER BY 1`)
		if err != nil {
			t.Fatal(err)
		}
		defs, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		return defs
	}
	before := schema()
	if _, err := e.projector(t, nil).Rebuild(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	if after := schema(); !slices.Equal(before, after) {
		t.Fatalf("schema after the rebuild:\n%s\nwant:\n%s", strings.Join(after, "\n"), strings.Join(before, "\n"))
	}
}

// A rebuild holds three connections at once; on a smaller pool it would
// wait for a connection forever, so it refuses at once and says why.
func TestRebuildNeedsThreeConnections(t *testing.T) {
	e := newEnv(t)
	newGenerator(e.names, 10, 43).publish(t, e.js, 100)
	small := e.smallPool(t, 2)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := e.projector(t, func(c *projector.Config) { c.Pool = small }).Rebuild(ctx, nil)
	if err == nil || !strings.Contains(err.Error(), "at least 3") {
		t.Fatalf("rebuild on a pool of 2: %v, want a refusal naming the 3 connections it needs", err)
	}
	if cp, err := e.checkpoint(ctx); !errors.Is(err, projector.ErrNotFound) {
		t.Fatalf("checkpoint %d (%v): a refused rebuild must write none", cp, err)
	}
}

// A running projector keeps one of the pool's connections for good. A
// rebuild that shares a pool of three with it cannot have the three it
// needs at once: it says so within its bound, and the read model and the
// projector go on as they were. (Its copiers used to take their
// connections as they started: on a stream longer than the read-ahead,
// one waited for a connection the other held until the read ended, and
// the read waited for it, for good. On this short stream that version
// got by, one copier after the other.)
func TestRebuildBesideProjectorOnSmallPool(t *testing.T) {
	e := newEnv(t)
	g := newGenerator(e.names, 10, 45)
	g.publish(t, e.js, 100)
	small := e.smallPool(t, 3)
	onSmall := func(c *projector.Config) { c.Pool = small }
	stop := run(t, e.projector(t, onSmall))
	defer stop()
	e.waitCaughtUp(t, time.Minute)
	before := dump(t, e.pool)

	p := e.projector(t, onSmall)
	projector.ConnWait(p, 500*time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := p.Rebuild(ctx, nil); err == nil || !strings.Contains(err.Error(), "no free connection") {
		t.Fatalf("rebuild beside a projector on a pool of 3: %v, want a refusal for want of a connection", err)
	}
	assertSameModel(t, before, dump(t, e.pool))
	g.publish(t, e.js, 50)
	e.waitCaughtUp(t, time.Minute)
}

// A stream that lost an event (message 7 is one, and its workspace has
// later ones) cannot be rebuilt: the rebuild says so with ErrGap and
// leaves the read model as it was.
func TestRebuildRefusesGap(t *testing.T) {
	e := newEnv(t)
	newGenerator(e.names, 10, 44).publish(t, e.js, 100)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	stream, err := e.js.Stream(ctx, e.names.EventStream())
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.DeleteMsg(ctx, 7); err != nil {
		t.Fatal(err)
	}
	_, err = e.projector(t, nil).Rebuild(ctx, nil)
	if !errors.Is(err, projector.ErrGap) {
		t.Fatalf("rebuild of a stream without message 7: %v, want ErrGap", err)
	}
	if _, err := e.checkpoint(ctx); !errors.Is(err, projector.ErrNotFound) {
		t.Fatalf("checkpoint: %v: a refused rebuild must write none", err)
	}
}

// A rebuild writes rows in PostgreSQL's binary format, each field encoded
// for one type (copy.go). A migration that changed a column's type would
// be caught by COPY for most changes, but not all (timestamptz and
// timestamp share a layout): the copied columns are held to the types the
// encoders write.
func TestCopyColumnTypes(t *testing.T) {
	e := newEnv(t)
	const (
		i8, i4, text, jsonb, ts = "bigint", "integer", "text", "jsonb", "timestamp with time zone"
	)
	encoded := map[string][]string{
		"workspace_events": {i8, text, text, i8, text, i8, i8, text, text, text, i4, jsonb, text, text, ts},
		"commands":         {text, text, text, text, ts, ts, text, text, text, text, i8, i8, i8, i8, text, i8},
		"workspaces":       {text, text, i8, i8, i8, jsonb, text, text, i8, i8, ts, ts, ts, ts, text},
	}
	for table, cols := range projector.CopyColumns {
		if len(cols) != len(encoded[table]) {
			t.Fatalf("%s: %d columns copied, %d types listed here", table, len(cols), len(encoded[table]))
		}
		for i, col := range cols {
			var typ string
			err := e.pool.QueryRow(context.Background(), `SELECT data_type FROM information_schema.columns
				WHERE table_schema = current_schema() AND table_name = $1 AND column_name = $2`, table, col).Scan(&typ)
			if err != nil {
				t.Fatalf("%s.%s: %v", table, col, err)
			}
			if typ != encoded[table][i] {
				t.Errorf("%s.%s is %s in the migrations; the rebuild's encoder writes %s (projector/copy.go)", table, col, typ, encoded[table][i])
			}
		}
	}
}
