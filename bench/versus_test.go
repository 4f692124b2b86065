package bench_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"github.com/turnstile-dev/turnstile/bench"
	"github.com/turnstile-dev/turnstile/client"
	"github.com/turnstile-dev/turnstile/engine"
	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/internal/testenv"
)

// durabilityPairs are the two comparisons: each JetStream setting beside
// the PostgreSQL setting that promises as much.
var durabilityPairs = []struct {
	name   string
	jsSync bool   // JetStream sync_always (fsync before every ack)
	pgSync string // the peer's synchronous_commit; the server keeps fsync on
}{
	{"default", false, "off"}, // writes reach the OS before the answer
	{"fsync", true, "on"},     // fsynced before the answer
}

const benchWorkspaces = 1000

// versusConfig sizes a run. BENCH_SMALL=1 (or -short) shrinks the
// durations to prove the benchmark works, not to measure.
type versusConfig struct {
	clients []int
	row     time.Duration // per side and row, split over two halves
	warm    time.Duration // per side and row, before the first half
	raw     time.Duration // each raw substrate figure
	// peerPool caps the peer's pool (BENCH_PEER_POOL); by default it is
	// sized to the clients, one connection each.
	peerPool int
}

func newVersusConfig(tb testing.TB) versusConfig {
	c := versusConfig{clients: []int{1, 8, 64, 512}, row: 4 * time.Second, warm: 500 * time.Millisecond, raw: 2 * time.Second,
		peerPool: benchWorkspaces}
	if os.Getenv("BENCH_SMALL") != "" || testing.Short() {
		c.row, c.warm, c.raw = 400*time.Millisecond, 100*time.Millisecond, 300*time.Millisecond
	}
	if v := os.Getenv("BENCH_ROW_SECONDS"); v != "" {
		s, err := strconv.ParseFloat(v, 64)
		if err != nil || s <= 0 {
			tb.Fatalf("BENCH_ROW_SECONDS=%q: want a positive number of seconds", v)
		}
		c.row = time.Duration(s * float64(time.Second))
	}
	if v := os.Getenv("BENCH_PEER_POOL"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			tb.Fatalf("BENCH_PEER_POOL=%q: want a positive number of connections", v)
		}
		c.peerPool = n
	}
	if v := os.Getenv("BENCH_CLIENTS"); v != "" {
		c.clients = nil
		for f := range strings.SplitSeq(v, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n < 1 || n > benchWorkspaces {
				tb.Fatalf("BENCH_CLIENTS=%q: want a comma-separated list of 1 to %d", v, benchWorkspaces)
			}
			c.clients = append(c.clients, n)
		}
	}
	return c
}

// BenchmarkVersusRowLock runs Turnstile and the row-lock peer (package
// bench) on the same command mix, one after the other, at each client
// count and for both durability pairs, and prints one table row each,
// beside the raw substrate figures measured in the same run: the raw CAS
// rate (64 appenders), one raw CAS append's p50/p99 with as many
// appenders as the row has clients (measured just before the row: the
// substrate's own tail), and raw PostgreSQL commits.
//
// The mix: 1,000 workspaces, created and brought to running first. Each
// client owns the workspaces i with i mod clients = its number, so no two
// commands for one workspace are ever in flight and every command is
// legal; it takes its workspaces in turn and sends a restart or (half the
// time, at random) a configure with a new spec, then the
// provision_succeeded of the generation that started. A configure of a
// running workspace applies its spec by provisioning again, so it needs
// that report too. Every command of both sides must be accepted, or the
// benchmark fails: a quarter restarts, a quarter configures, half reports.
// A command's latency is from the call to its outcome.
//
//	go test -run '^$' -bench VersusRowLock -benchtime 1x -count 2 ./bench/
//
// BENCH_SMALL=1 (or -short) shrinks the durations to a smoke run;
// BENCH_ROW_SECONDS (default 4) is each side's measured time per row;
// BENCH_CLIENTS (default 1,8,64,512) the rows; BENCH_PEER_POOL caps the
// peer's pool, which is otherwise one connection per client.
func BenchmarkVersusRowLock(b *testing.B) {
	cfg := newVersusConfig(b)
	maxClients := slices.Max(cfg.clients)
	// fsync stays on for the whole server; each pair sets
	// synchronous_commit on its own connections.
	pg := testenv.StartPostgresWith(b, testenv.PostgresOptions{Durable: true,
		// The peer's pool (64 during setup), the raw figure's 8 and 64,
		// and a margin.
		Settings: map[string]string{"max_connections": strconv.Itoa(max(maxClients, 64) + 8 + 64 + 20)}})
	var table []string
	for _, d := range durabilityPairs {
		b.Run(d.name, func(b *testing.B) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
			defer cancel()
			core, ts := startTurnstile(b, d.jsSync)
			peerURL := pg.NewDatabase(b)
			params := map[string]string{"synchronous_commit": d.pgSync}
			peer := newPeerSide(ctx, b, peerURL, params)
			for _, s := range []*side{ts, peer} {
				if err := s.setup(ctx, 64); err != nil {
					b.Fatalf("%s: setup: %v", s.name, err)
				}
			}
			rawCAS := rawCASRate(ctx, b, core, 64, cfg.raw)
			// PostgreSQL's best concurrency is lower than JetStream's:
			// with synchronous_commit=off a commit is CPU, and 2 cores
			// serve 64 backends worse than 8.
			rawPG8 := rawPGRate(ctx, b, peerURL, params, 8, cfg.raw)
			rawPG64 := rawPGRate(ctx, b, peerURL, params, 64, cfg.raw)

			for row, clients := range cfg.clients {
				b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
					peer.open(ctx, b, min(clients, cfg.peerPool))
					rawLat := rawCASLatency(ctx, b, core, clients, cfg.raw)
					first, second := ts, peer
					if row%2 == 1 {
						first, second = peer, ts
					}
					for range b.N {
						// ABBA: each side runs two halves, so a drift of
						// the shared host during the row hits both alike.
						for _, s := range []*side{first, second} {
							if err := s.run(ctx, clients, cfg.warm, false); err != nil {
								b.Fatalf("%s: warm-up: %v", s.name, err)
							}
						}
						for _, s := range []*side{first, second, second, first} {
							if err := s.run(ctx, clients, cfg.row/2, true); err != nil {
								b.Fatalf("%s: %v", s.name, err)
							}
						}
					}
					t, p := ts.take(), peer.take()
					b.ReportMetric(t.rate, "ts_cmds/s")
					b.ReportMetric(t.p50, "ts_p50_ms")
					b.ReportMetric(t.p99, "ts_p99_ms")
					b.ReportMetric(p.rate, "peer_cmds/s")
					b.ReportMetric(p.p50, "peer_p50_ms")
					b.ReportMetric(p.p99, "peer_p99_ms")
					b.ReportMetric(t.rate/p.rate, "ratio")
					b.ReportMetric(rawCAS, "raw_cas/s")
					b.ReportMetric(rawPG8, "raw_pg8/s")
					b.ReportMetric(rawPG64, "raw_pg64/s")
					b.ReportMetric(rawLat.p99, "raw_cas_p99_ms")
					line := fmt.Sprintf("| %d | %s | %s | %.1f | %.1f | %s | %.1f | %.1f | %.2f | %s | %.2f / %.1f | %s / %s | %s first |",
						clients, pairName(d.jsSync, d.pgSync), thousands(t.rate), t.p50, t.p99,
						thousands(p.rate), p.p50, p.p99, t.rate/p.rate, thousands(rawCAS), rawLat.p50, rawLat.p99,
						thousands(rawPG8), thousands(rawPG64), first.name)
					b.Logf("%d commands each (turnstile %d, peer %d)\n%s", min(t.n, p.n), t.n, p.n, line)
					table = append(table, line)
				})
			}
		})
	}
	if len(table) > 0 {
		fmt.Printf("\n| clients | durability | turnstile cmds/s | p50 ms | p99 ms | peer cmds/s | p50 ms | p99 ms | ratio | raw CAS appends/s | one raw CAS append at the row's clients, p50 / p99 ms | raw PG commits/s (8 / 64 conns) | order |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n%s\n\n",
			strings.Join(table, "\n"))
	}
}

func pairName(jsSync bool, pgSync string) string {
	if jsSync {
		return "sync_always / synchronous_commit=" + pgSync
	}
	return "default / synchronous_commit=" + pgSync
}

// sendFunc sends one command and returns its outcome and the workspace's
// generation after it.
type sendFunc func(ctx context.Context, worker int, cmd fsm.Command) (fsm.Outcome, uint64, error)

// side is one system under test with the mix's state.
type side struct {
	name string
	send sendFunc
	// gens is each workspace's generation, known to the client that owns
	// it: every command is accepted, so the client can predict it.
	gens []uint64
	// measured samples, reset by take.
	lat     []time.Duration
	elapsed time.Duration
	// open prepares the side for a number of clients (the peer's pool).
	open func(ctx context.Context, tb testing.TB, clients int)
}

func wsName(i int) string { return "ws-" + strconv.Itoa(i) }

// setup creates the workspaces and brings them to running at generation 1.
func (s *side) setup(ctx context.Context, workers int) error {
	g, ctx := errgroup.WithContext(ctx)
	for k := range workers {
		g.Go(func() error {
			for i := k; i < len(s.gens); i += workers {
				if err := s.expect(ctx, k, fsm.Command{Type: fsm.Create, Workspace: wsName(i)}, 1); err != nil {
					return err
				}
				if err := s.expect(ctx, k, fsm.Command{Type: fsm.ProvisionSucceeded, Workspace: wsName(i), Generation: 1,
					ContainerID: "c-" + wsName(i)}, 1); err != nil {
					return err
				}
				s.gens[i] = 1
			}
			return nil
		})
	}
	return g.Wait()
}

// expect sends cmd and fails unless it is accepted at generation gen.
func (s *side) expect(ctx context.Context, worker int, cmd fsm.Command, gen uint64) error {
	o, g, err := s.send(ctx, worker, cmd)
	if err != nil {
		return err
	}
	if o != fsm.Accepted || g != gen {
		return fmt.Errorf("%s %s: %s at generation %d, want accepted at generation %d: the mix must stay legal",
			cmd.Type, cmd.Workspace, o, g, gen)
	}
	return nil
}

// run is the mix with clients workers for d; each finishes the pair it
// started. With record, the latencies and the time count.
func (s *side) run(ctx context.Context, clients int, d time.Duration, record bool) error {
	lats := make([][]time.Duration, clients)
	g, ctx := errgroup.WithContext(ctx)
	start := time.Now()
	until := start.Add(d)
	for k := range clients {
		g.Go(func() error {
			rng := rand.New(rand.NewPCG(uint64(k), uint64(start.UnixNano())))
			var lat []time.Duration
			owned := (len(s.gens) - k + clients - 1) / clients // k, k+clients, ...
			for j := 0; time.Now().Before(until); j++ {
				i := k + j%owned*clients
				gen := s.gens[i] + 1
				user := fsm.Command{Type: fsm.Restart, Workspace: wsName(i)}
				if rng.IntN(2) == 1 {
					user = fsm.Command{Type: fsm.Configure, Workspace: wsName(i),
						Spec: &fsm.Spec{Env: map[string]string{"G": strconv.FormatUint(gen, 10)}}}
				}
				report := fsm.Command{Type: fsm.ProvisionSucceeded, Workspace: wsName(i), Generation: gen,
					ContainerID: "c-" + wsName(i)}
				for _, cmd := range []fsm.Command{user, report} {
					t0 := time.Now()
					if err := s.expect(ctx, k, cmd, gen); err != nil {
						return err
					}
					lat = append(lat, time.Since(t0))
				}
				s.gens[i] = gen
			}
			lats[k] = lat
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	if record {
		s.elapsed += time.Since(start)
		for _, l := range lats {
			s.lat = append(s.lat, l...)
		}
	}
	return nil
}

// figures are one side's row.
type figures struct {
	n              int
	rate, p50, p99 float64
}

// take returns the figures recorded since the last take and resets them.
func (s *side) take() figures {
	lat := s.lat
	slices.Sort(lat)
	f := figures{n: len(lat)}
	if len(lat) > 0 {
		f.rate = float64(len(lat)) / s.elapsed.Seconds()
		f.p50 = ms(lat[len(lat)/2])
		f.p99 = ms(lat[len(lat)*99/100])
	}
	s.lat, s.elapsed = nil, 0
	return f
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// newTurnstileSide sends through 8 clients, each on its own connection, as
// engine/bench_test.go does: NATS multiplexes, so a client per worker
// would only add connections.
// startTurnstile starts an embedded core with the engine as serve
// configures it for that durability (atomicFrom) and connects it
// (in-process; BENCH_TCP=1: over loopback TCP, as before 2026-12-04), and
// Turnstile's side of the mix on it, not set up yet.
func startTurnstile(tb testing.TB, syncAlways bool) (*testenv.Core, *side) {
	tb.Helper()
	core := testenv.StartCore(tb, testenv.CoreOptions{NATS: testenv.NATSOptions{SyncAlways: syncAlways}, InProcess: os.Getenv("BENCH_TCP") == "",
		Engine: engine.Config{AtomicBatchFrom: atomicFrom(syncAlways)}})
	return core, newTurnstileSide(tb, core)
}

func newTurnstileSide(tb testing.TB, core *testenv.Core) *side {
	clients := make([]*client.Client, 8)
	reporters := make([]*client.Client, 8) // system reports go on <prefix>.sys.<ws>
	for i := range clients {
		clients[i] = core.Client(tb, fmt.Sprintf("bench-%d", i))
		reporters[i] = core.SystemClient(tb, fmt.Sprintf("bench-report-%d", i))
	}
	return &side{
		name: "turnstile",
		gens: make([]uint64, benchWorkspaces),
		send: func(ctx context.Context, worker int, cmd fsm.Command) (fsm.Outcome, uint64, error) {
			cl := clients[worker%len(clients)]
			var (
				o   events.OutcomeRecord
				err error
			)
			if cmd.Type.IsSystem() {
				o, err = reporters[worker%len(reporters)].Send(ctx, cmd)
			} else {
				o, err = cl.Send(ctx, cmd)
			}
			return o.Outcome, o.Generation, err
		},
		open: func(context.Context, testing.TB, int) {},
	}
}

// newPeerSide is the row-lock peer on a fresh database: its schema made,
// and a pool sized to the clients of each row (open), connected and with
// its statements prepared by the warm-up before anything is measured.
func newPeerSide(ctx context.Context, tb testing.TB, url string, params map[string]string) *side {
	var (
		rl   *bench.RowLock
		pool *pgxpool.Pool
	)
	s := &side{name: "peer", gens: make([]uint64, benchWorkspaces)}
	s.open = func(ctx context.Context, tb testing.TB, clients int) {
		tb.Helper()
		if pool != nil {
			pool.Close()
		}
		pool = newPool(ctx, tb, url, params, clients)
		rl = bench.New(pool)
	}
	s.send = func(ctx context.Context, _ int, cmd fsm.Command) (fsm.Outcome, uint64, error) {
		r, err := rl.Send(ctx, cmd)
		return r.Outcome, r.State.Generation, err
	}
	s.open(ctx, tb, 64)
	if err := rl.CreateSchema(ctx); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { pool.Close() })
	return s
}

// newPool opens a pool of exactly conns connections, all connected.
// Statements are prepared on each connection at first use (pgx's default
// statement cache).
func newPool(ctx context.Context, tb testing.TB, url string, params map[string]string, conns int) *pgxpool.Pool {
	tb.Helper()
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		tb.Fatal(err)
	}
	cfg.MaxConns, cfg.MinConns = int32(conns), int32(conns)
	for k, v := range params {
		cfg.ConnConfig.RuntimeParams[k] = v
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		tb.Fatal(err)
	}
	held := make([]*pgxpool.Conn, conns)
	g, gctx := errgroup.WithContext(ctx)
	for i := range held {
		g.Go(func() (err error) {
			held[i], err = pool.Acquire(gctx)
			return err
		})
	}
	err = g.Wait()
	for _, c := range held {
		if c != nil {
			c.Release()
		}
	}
	if err != nil {
		pool.Close()
		tb.Fatalf("connect %d: %v", conns, err)
	}
	return pool
}

// rawCASRate is the JetStream substrate, as engine/bench_test.go's
// rawCASRate measures it (appenders on distinct subjects, each publishing
// with an expected last subject sequence and waiting for its ack), for a
// fixed time instead of a fixed count.
func rawCASRate(ctx context.Context, tb testing.TB, core *testenv.Core, appenders int, d time.Duration) float64 {
	tb.Helper()
	_, js := core.ConnectOwn(tb) // as the engine writes: in-process with startTurnstile's core
	return rawCASRateOn(ctx, tb, js, 1, appenders, d)
}

// rawCASRateOn is rawCASRate on a stream of the given replicas.
func rawCASRateOn(ctx context.Context, tb testing.TB, js jetstream.JetStream, replicas, appenders int, d time.Duration) float64 {
	tb.Helper()
	return rawCASOn(ctx, tb, js, replicas, appenders, d).rate
}

// rawCASFigures are one measure of the substrate: appends per second and
// the latency of one append (ms).
type rawCASFigures struct{ rate, p50, p99 float64 }

// rawCASLatency is rawCASRate's measure read for its latencies: what one
// compare-and-set append costs at that many appenders, the tail a command
// of several such round trips cannot beat.
func rawCASLatency(ctx context.Context, tb testing.TB, core *testenv.Core, appenders int, d time.Duration) rawCASFigures {
	tb.Helper()
	_, js := core.ConnectOwn(tb)
	return rawCASOn(ctx, tb, js, 1, appenders, d)
}

func rawCASOn(ctx context.Context, tb testing.TB, js jetstream.JetStream, replicas, appenders int, d time.Duration) rawCASFigures {
	tb.Helper()
	st, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: "RAW", Subjects: []string{"raw.>"}, Replicas: replicas})
	if err != nil {
		tb.Fatal(err)
	}
	// Each appender starts from an empty subject (expected sequence 0),
	// so a second call on the same server needs the last one's gone.
	if err := st.Purge(ctx); err != nil {
		tb.Fatal(err)
	}
	lats := make([][]time.Duration, appenders)
	var wg sync.WaitGroup
	start := time.Now()
	until := start.Add(d)
	for a := range appenders {
		wg.Go(func() {
			subj := fmt.Sprintf("raw.%d", a)
			var last uint64
			payload := make([]byte, 400) // about an envelope's size
			for t0 := time.Now(); t0.Before(until); t0 = time.Now() {
				ack, err := js.Publish(ctx, subj, payload, jetstream.WithExpectLastSequencePerSubject(last))
				if err != nil {
					tb.Errorf("raw append: %v", err)
					return
				}
				lats[a] = append(lats[a], time.Since(t0))
				last = ack.Sequence
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	all := slices.Concat(lats...)
	if len(all) == 0 {
		tb.Fatal("raw append: none in " + d.String())
	}
	slices.Sort(all)
	quantile := func(q float64) float64 { return float64(all[int(q*float64(len(all)-1))].Microseconds()) / 1000 }
	return rawCASFigures{rate: float64(len(all)) / elapsed.Seconds(), p50: quantile(0.5), p99: quantile(0.99)}
}

// rawPGRate is the PostgreSQL substrate under the same session settings:
// workers each committing single-row UPDATEs of their own row, one
// statement per transaction (autocommit), as fast as they can.
func rawPGRate(ctx context.Context, tb testing.TB, url string, params map[string]string, workers int, d time.Duration) float64 {
	tb.Helper()
	pool := newPool(ctx, tb, url, params, workers)
	defer pool.Close()
	if _, err := pool.Exec(ctx, `CREATE TABLE IF NOT EXISTS raw (id int PRIMARY KEY, n bigint NOT NULL);
		INSERT INTO raw SELECT i, 0 FROM generate_series(0, `+strconv.Itoa(workers-1)+`) i ON CONFLICT DO NOTHING`); err != nil {
		tb.Fatal(err)
	}
	var n atomic.Int64
	g, gctx := errgroup.WithContext(ctx)
	start := time.Now()
	until := start.Add(d)
	for w := range workers {
		g.Go(func() error {
			for time.Now().Before(until) {
				if _, err := pool.Exec(gctx, `UPDATE raw SET n = n + 1 WHERE id = $1`, w); err != nil {
					return fmt.Errorf("raw update: %w", err)
				}
				n.Add(1)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		tb.Fatal(err)
	}
	return float64(n.Load()) / time.Since(start).Seconds()
}

// thousands formats a rate as 12,345.
func thousands(f float64) string {
	s := strconv.FormatInt(int64(f+0.5), 10)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}
