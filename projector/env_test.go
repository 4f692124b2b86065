package projector_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/internal/testenv"
	"github.com/turnstile-dev/turnstile/migrations"
	"github.com/turnstile-dev/turnstile/projector"
)

var pg *testenv.Postgres

func TestMain(m *testing.M) { goleak.VerifyTestMain(testenv.MainWithPostgres(m, &pg)) }

// env is one test's NATS stream and PostgreSQL database.
type env struct {
	names events.Names
	nats  *testenv.NATS
	nc    *nats.Conn
	js    jetstream.JetStream
	store *events.Store
	url   string
	pool  *pgxpool.Pool
}

func newEnv(tb testing.TB) *env {
	return newEnvOn(tb, pg, events.StreamOptions{})
}

// newEnvOn uses server p, for tests that stop and restart their own, and
// stream options o.
func newEnvOn(tb testing.TB, p *testenv.Postgres, o events.StreamOptions) *env {
	tb.Helper()
	e := &env{names: events.NewNames("")}
	e.nats = testenv.StartNATS(tb, testenv.NATSOptions{})
	e.nc, e.js = e.nats.Connect(tb)
	ctx := context.Background()
	if err := events.EnsureStreams(ctx, e.js, e.names, o); err != nil {
		tb.Fatal(err)
	}
	store, err := events.OpenStore(ctx, e.js, e.names, events.Codec{})
	if err != nil {
		tb.Fatal(err)
	}
	e.store = store
	e.url = p.NewDatabase(tb)
	e.pool = openPool(tb, e.url)
	db := stdlib.OpenDBFromPool(e.pool)
	defer db.Close()
	if err := migrations.Up(ctx, db); err != nil {
		tb.Fatal(err)
	}
	return e
}

func openPool(tb testing.TB, url string) *pgxpool.Pool {
	tb.Helper()
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		tb.Fatal(err)
	}
	// A running projector holds one connection and borrows another; a
	// rebuild beside it holds three; the test reads on one more.
	cfg.MaxConns = 8
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(pool.Close)
	return pool
}

// smallPool is a pool on e's database that allows n connections.
func (e *env) smallPool(tb testing.TB, n int32) *pgxpool.Pool {
	tb.Helper()
	cfg := e.pool.Config().Copy()
	cfg.MaxConns = n
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(pool.Close)
	return pool
}

func (e *env) projector(tb testing.TB, mod func(*projector.Config)) *projector.Projector {
	tb.Helper()
	cfg := projector.Config{Store: e.store, Pool: e.pool,
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 200 * time.Millisecond}
	if mod != nil {
		mod(&cfg)
	}
	p, err := projector.New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	return p
}

// run starts p.Run; the returned stop (also a cleanup) cancels it and
// waits for it to return.
func run(tb testing.TB, p *projector.Projector) (stop func()) {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				tb.Errorf("Run: %v", err)
			}
		})
	}
	tb.Cleanup(stop)
	return stop
}

func (e *env) streamLast(tb testing.TB) uint64 {
	tb.Helper()
	s, err := e.js.Stream(context.Background(), e.names.EventStream())
	if err != nil {
		tb.Fatal(err)
	}
	return s.CachedInfo().State.LastSeq
}

func (e *env) checkpoint(ctx context.Context) (uint64, error) {
	cp, err := projector.ReadCheckpoint(ctx, e.pool, projector.DefaultName)
	return cp.StreamSeq, err
}

// waitCaughtUp waits until the checkpoint reaches the stream's end.
func (e *env) waitCaughtUp(tb testing.TB, timeout time.Duration) {
	tb.Helper()
	last := e.streamLast(tb)
	waitFor(tb, timeout, fmt.Sprintf("checkpoint %d", last), func(ctx context.Context) (bool, error) {
		cp, err := e.checkpoint(ctx)
		return cp == last, err
	})
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(tb testing.TB, timeout time.Duration, what string, cond func(context.Context) (bool, error)) {
	tb.Helper()
	if err := poll(context.Background(), timeout, what, cond); err != nil {
		tb.Fatal(err)
	}
}

// poll is waitFor for goroutines other than the test's (projector hooks):
// it returns an error instead of failing the test.
func poll(ctx context.Context, timeout time.Duration, what string, cond func(context.Context) (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	var lastErr error
	for {
		cctx, ccancel := context.WithTimeout(ctx, 2*time.Second)
		ok, err := cond(cctx)
		ccancel()
		if err == nil && ok {
			return nil
		}
		if err != nil && ctx.Err() == nil {
			lastErr = err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("timed out after %v waiting for %s (last error: %v)", timeout, what, lastErr)
		case <-t.C:
		}
	}
}

// publishAll publishes msgs in order.
func publishAll(tb testing.TB, js jetstream.JetStream, msgs ...*nats.Msg) {
	tb.Helper()
	for _, m := range msgs {
		if _, err := js.PublishMsg(context.Background(), m); err != nil {
			tb.Fatal(err)
		}
	}
}

// generator produces a realistic history: commands decided by the real
// FSM against the states they produce, with their envelopes and outcomes.
type generator struct {
	names  events.Names
	rng    *rand.Rand
	states map[string]fsm.Workspace
	ids    []string
	prefix string // of command and event ids, unique per generator
	n      int
	now    time.Time
	// Events counts accepted commands.
	Events int
}

func newGenerator(names events.Names, workspaces int, seed uint64) *generator {
	return splitGenerators(names, workspaces, 1, seed)[0]
}

// splitGenerators returns parts generators over disjoint workspaces, to
// generate in parallel: histories of different workspaces are independent.
func splitGenerators(names events.Names, workspaces, parts int, seed uint64) []*generator {
	gs := make([]*generator, parts)
	for p := range gs {
		s := seed + uint64(p)<<32
		gs[p] = &generator{names: names, rng: rand.New(rand.NewPCG(s, s)), states: map[string]fsm.Workspace{},
			prefix: fmt.Sprintf("p%d-", p), now: time.Now().Add(-40 * time.Minute).UTC().Truncate(time.Millisecond)}
	}
	for i := range workspaces {
		g := gs[i%parts]
		g.ids = append(g.ids, fmt.Sprintf("ws-%04d", i))
	}
	return gs
}

// next decides one command and returns its messages: the event, if
// accepted, then the outcome.
func (g *generator) next() []*nats.Msg {
	g.n++
	g.now = g.now.Add(10 * time.Millisecond)
	id := g.ids[g.rng.IntN(len(g.ids))]
	w := g.states[id]
	if w.ID == "" {
		w.ID = id
	}
	cmd := g.command(w)
	d := fsm.Decide(w, cmd)
	o := events.OutcomeRecord{CommandID: cmd.ID, Workspace: id, CommandType: cmd.Type, Actor: cmd.Actor,
		Outcome: d.Outcome, Generation: w.Generation, State: w.Status, CommandGeneration: cmd.Generation,
		Rejection: d.Rejection, Reason: d.Reason, ReceivedAt: g.now, DecidedAt: g.now.Add(100 * time.Microsecond)}
	var out []*nats.Msg
	if d.Outcome == fsm.Accepted {
		env := events.NewEnvelope(fmt.Sprintf("%se%07d", g.prefix, g.n), w, *d.Event, cmd, g.now)
		b, err := events.Codec{}.Encode(env)
		if err != nil {
			panic(err)
		}
		m := nats.NewMsg(g.names.Event(id))
		m.Data = b
		out = append(out, m)
		g.states[id] = env.State
		o.EventSeq, o.Generation, o.State = env.Seq, env.State.Generation, env.State.Status
		g.Events++
	}
	b, err := events.EncodeOutcome(o)
	if err != nil {
		panic(err)
	}
	m := nats.NewMsg(g.names.Outcome(cmd.ID))
	m.Data = b
	return append(out, m)
}

func (g *generator) command(w fsm.Workspace) fsm.Command {
	c := fsm.Command{ID: fmt.Sprintf("%sc%07d", g.prefix, g.n), Workspace: w.ID, Actor: "gen"}
	r := g.rng.IntN(100)
	pick := func(ts ...fsm.CommandType) fsm.CommandType { return ts[g.rng.IntN(len(ts))] }
	sys := func(t fsm.CommandType, reason string) {
		c.Type, c.Generation, c.Actor, c.Reason = t, w.Generation, "provisioner", reason
		if r%17 == 0 && w.Generation > 1 {
			c.Generation-- // a late outcome of a superseded attempt: stale
		}
	}
	switch w.Status {
	case fsm.None, fsm.Deleted:
		c.Type = fsm.Create
		if r < 10 {
			c.Type = pick(fsm.Start, fsm.Stop, fsm.Delete) // not_found or gone
		}
	case fsm.Provisioning:
		switch {
		case r < 65:
			sys(fsm.ProvisionSucceeded, "")
			c.ContainerID = fmt.Sprintf("ctr-%s-%d", w.ID, c.Generation)
		case r < 75:
			sys(fsm.ProvisionFailed, "image pull failed: manifest unknown")
		case r < 78:
			sys(fsm.DeadlineExceeded, "provisioning deadline of 5m0s exceeded")
		case r < 88:
			c.Type = pick(fsm.Restart, fsm.Start) // busy
		default:
			c.Type = pick(fsm.Configure, fsm.Stop, fsm.Delete)
		}
	case fsm.Running:
		switch {
		case r < 8:
			sys(fsm.ContainerExited, "oom killed")
			code := 137
			c.ExitCode = &code
		default:
			c.Type = pick(fsm.Stop, fsm.Restart, fsm.Configure, fsm.Start, fsm.Create, fsm.Delete)
		}
	case fsm.Stopping:
		switch {
		case r < 70:
			sys(fsm.StopSucceeded, "")
		case r < 78:
			sys(fsm.StopFailed, "container did not stop in 10s")
		default:
			c.Type = pick(fsm.Start, fsm.Restart, fsm.Stop)
		}
	case fsm.Stopped:
		c.Type = pick(fsm.Start, fsm.Start, fsm.Delete, fsm.Configure, fsm.Stop)
	case fsm.Failed:
		c.Type = pick(fsm.Start, fsm.Restart, fsm.Delete, fsm.Stop)
	case fsm.Deleting:
		switch {
		case r < 75:
			sys(fsm.DeleteSucceeded, "")
		case r < 85:
			sys(fsm.DeleteFailed, "volume in use")
		default:
			c.Type = pick(fsm.Start, fsm.Delete)
		}
	}
	if c.Type == fsm.Configure || (c.Type == fsm.Create && r%2 == 0) {
		c.Spec = &fsm.Spec{Image: fmt.Sprintf("registry.local/dev:%d", g.rng.IntN(5)),
			Env: map[string]string{"TIER": fmt.Sprint(g.rng.IntN(2))}, MemoryBytes: 512 << 20}
	}
	return c
}

// publish publishes commands' messages asynchronously until events
// accepted events have been produced, and waits for every ack.
func (g *generator) publish(tb testing.TB, js jetstream.JetStream, events int) {
	tb.Helper()
	if err := g.publishErr(js, events); err != nil {
		tb.Fatal(err)
	}
}

func (g *generator) publishErr(js jetstream.JetStream, events int) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	target := g.Events + events
	// Acks are awaited every 2,000 publishes, not all at the end: the
	// futures hold their messages, and a large test publishes 100,000.
	var acks []jetstream.PubAckFuture
	settle := func() error {
		err := testenv.AckError(ctx, acks)
		acks = acks[:0]
		return err
	}
	for g.Events < target {
		for _, m := range g.next() {
			f, err := js.PublishMsgAsync(m)
			for errors.Is(err, jetstream.ErrTooManyStalledMsgs) { // a loaded machine: wait, then go on
				if err = settle(); err == nil {
					f, err = js.PublishMsgAsync(m)
				}
			}
			if err != nil {
				return err
			}
			acks = append(acks, f)
		}
		if len(acks) >= 2000 {
			if err := settle(); err != nil {
				return err
			}
		}
	}
	return settle()
}

// publishParallel runs each generator's publish on its own goroutine.
func publishParallel(tb testing.TB, js jetstream.JetStream, gs []*generator, eventsEach int) {
	tb.Helper()
	errs := make(chan error, len(gs))
	for _, g := range gs {
		go func() { errs <- g.publishErr(js, eventsEach) }()
	}
	for range gs {
		if err := <-errs; err != nil {
			tb.Fatal(err)
		}
	}
}

// totals sums what generators produced.
type totals struct{ events, commands, workspaces int }

func sum(gs ...*generator) totals {
	var t totals
	for _, g := range gs {
		t.events += g.Events
		t.commands += g.n
		t.workspaces += len(g.states)
	}
	return t
}

// dump reads the read model in a canonical order, as JSON text per row.
// The checkpoint's updated_at is wall-clock time and left out.
func dump(tb testing.TB, pool *pgxpool.Pool) map[string][]string {
	tb.Helper()
	queries := map[string]string{
		"workspaces":           `SELECT to_jsonb(t)::text FROM workspaces t ORDER BY id`,
		"workspace_events":     `SELECT to_jsonb(t)::text FROM workspace_events t ORDER BY stream_seq`,
		"commands":             `SELECT to_jsonb(t)::text FROM commands t ORDER BY command_id`,
		"projector_checkpoint": `SELECT (to_jsonb(t) - 'updated_at')::text FROM projector_checkpoint t ORDER BY name`,
		"dead_letters":         `SELECT to_jsonb(t)::text FROM dead_letters t ORDER BY stream_seq`,
	}
	out := map[string][]string{}
	for table, q := range queries {
		rows, err := pool.Query(context.Background(), q)
		if err != nil {
			tb.Fatal(err)
		}
		for rows.Next() {
			var s string
			if err := rows.Scan(&s); err != nil {
				tb.Fatal(err)
			}
			out[table] = append(out[table], s)
		}
		if err := rows.Err(); err != nil {
			tb.Fatal(err)
		}
	}
	return out
}

// assertSameModel fails on the first row that differs.
func assertSameModel(tb testing.TB, want, got map[string][]string) {
	tb.Helper()
	for table, w := range want {
		g := got[table]
		for i := 0; i < max(len(w), len(g)); i++ {
			switch {
			case i >= len(g):
				tb.Fatalf("%s: row %d missing: %s", table, i, w[i])
			case i >= len(w):
				tb.Fatalf("%s: extra row %d: %s", table, i, g[i])
			case w[i] != g[i]:
				tb.Fatalf("%s: row %d differs:\n want %s\n got  %s", table, i, w[i], g[i])
			}
		}
	}
}

// fingerprint hashes each table of the read model in canonical order, so
// that large models compare without moving every row into the test.
func fingerprint(tb testing.TB, pool *pgxpool.Pool) map[string]string {
	tb.Helper()
	queries := map[string]string{
		"workspaces":           `SELECT md5(string_agg(to_jsonb(t)::text, E'\n' ORDER BY id)) FROM workspaces t`,
		"workspace_events":     `SELECT md5(string_agg(to_jsonb(t)::text, E'\n' ORDER BY stream_seq)) FROM workspace_events t`,
		"commands":             `SELECT md5(string_agg(to_jsonb(t)::text, E'\n' ORDER BY command_id)) FROM commands t`,
		"projector_checkpoint": `SELECT md5(string_agg((to_jsonb(t) - 'updated_at')::text, E'\n' ORDER BY name)) FROM projector_checkpoint t`,
		"dead_letters":         `SELECT md5(string_agg(to_jsonb(t)::text, E'\n' ORDER BY stream_seq)) FROM dead_letters t`,
	}
	out := map[string]string{}
	for table, q := range queries {
		var h *string
		if err := pool.QueryRow(context.Background(), q).Scan(&h); err != nil {
			tb.Fatal(err)
		}
		if h == nil && table == "dead_letters" {
			continue // usually empty
		}
		if h == nil {
			tb.Fatalf("%s is empty: nothing to compare", table)
		}
		out[table] = *h
	}
	return out
}

// assertEqualsRebuild checks the incremental read model against a rebuild
// from the same stream, row for row.
func (e *env) assertEqualsRebuild(tb testing.TB, p *projector.Projector) projector.RebuildStats {
	tb.Helper()
	sums := fingerprint(tb, e.pool)
	var before map[string][]string
	var rows int
	if err := e.pool.QueryRow(context.Background(), `SELECT count(*) FROM workspace_events`).Scan(&rows); err != nil {
		tb.Fatal(err)
	}
	if rows < 20_000 { // keep rows to show a difference; large models only tell which table
		before = dump(tb, e.pool)
	}
	stats, err := p.Rebuild(context.Background(), nil)
	if err != nil {
		tb.Fatal(err)
	}
	if after := fingerprint(tb, e.pool); !maps.Equal(after, sums) {
		if before != nil {
			assertSameModel(tb, before, dump(tb, e.pool))
		}
		tb.Fatalf("read model differs from its rebuild: table fingerprints %v, rebuilt %v", sums, after)
	}
	return stats
}
