package projector_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/internal/testenv"
	"github.com/turnstile-dev/turnstile/projector"
)

// The projector's benchmarks are macro benchmarks: each runs its scenario
// once, whatever b.N, and reports rates with b.ReportMetric, beside the raw
// rate of the same PostgreSQL (256 upserts per transaction) measured in the
// same run. Run them with:
//
//	go test -run '^$' -bench . -benchtime 1x ./projector/
//
// Each runs against the shared test PostgreSQL (fsync=off) and against a
// durable one (fsync on, synchronous commit).

const benchEvents = 50_000

func BenchmarkSteady(b *testing.B) {
	forEachDurability(b, func(b *testing.B, p *testenv.Postgres) {
		e := newEnvOn(b, p, events.StreamOptions{})
		publishParallel(b, e.js, splitGenerators(e.names, 1000, 2, 11), benchEvents/2)
		last := e.streamLast(b)
		substrate := upsertRate(b, e.pool)
		pr := e.projector(b, nil)
		b.ResetTimer()
		start := time.Now()
		stop := run(b, pr)
		e.waitCaughtUp(b, 5*time.Minute)
		d := time.Since(start)
		stop()
		b.ReportMetric(benchEvents/d.Seconds(), "events/s")
		b.ReportMetric(float64(last)/d.Seconds(), "msgs/s")
		b.ReportMetric(substrate, "pg-upserts/s")
	})
}

func BenchmarkRebuild(b *testing.B) {
	forEachDurability(b, func(b *testing.B, p *testenv.Postgres) {
		e := newEnvOn(b, p, events.StreamOptions{})
		publishParallel(b, e.js, splitGenerators(e.names, 1000, 2, 12), benchEvents/2)
		substrate := upsertRate(b, e.pool)
		pr := e.projector(b, nil)
		b.ResetTimer()
		start := time.Now()
		stats, err := pr.Rebuild(context.Background(), nil)
		if err != nil {
			b.Fatal(err)
		}
		d := time.Since(start)
		b.ReportMetric(float64(stats.Events)/d.Seconds(), "events/s")
		b.ReportMetric(float64(stats.Messages)/d.Seconds(), "msgs/s")
		b.ReportMetric(stats.Load.Seconds(), "load-s")
		b.ReportMetric(stats.Index.Seconds(), "index-s")
		b.ReportMetric(stats.Swap.Seconds(), "swap-s")
		b.ReportMetric(substrate, "pg-upserts/s")
	})
}

// BenchmarkLag publishes at 2,000 events/s for 10 s while the projector
// runs, and reports the delay from each message's publish to the commit
// that applied it.
func BenchmarkLag(b *testing.B) {
	const rate, duration = 2000, 10 * time.Second
	forEachDurability(b, func(b *testing.B, p *testenv.Postgres) {
		e := newEnvOn(b, p, events.StreamOptions{})
		substrate := upsertRate(b, e.pool)
		var mu sync.Mutex
		var published []time.Time // by stream seq - 1: one publisher, so seqs follow publish order
		var delays []time.Duration
		pr := e.projector(b, func(c *projector.Config) {
			c.Hooks.AfterCommit = func(_ context.Context, bi projector.BatchInfo) error {
				now := time.Now()
				mu.Lock()
				defer mu.Unlock()
				for s := bi.First; s <= bi.Last; s++ {
					delays = append(delays, now.Sub(published[s-1]))
				}
				return nil
			}
		})
		stop := run(b, pr)
		g := newGenerator(e.names, 1000, 13)
		var acks []jetstream.PubAckFuture
		b.ResetTimer()
		start := time.Now()
		tick := time.NewTicker(2 * time.Millisecond)
		for now := range tick.C {
			elapsed := now.Sub(start)
			if elapsed > duration {
				break
			}
			for g.Events < int(elapsed.Seconds()*rate) {
				for _, m := range g.next() {
					mu.Lock()
					published = append(published, time.Now())
					mu.Unlock()
					f, err := e.js.PublishMsgAsync(m)
					if err != nil {
						b.Fatal(err)
					}
					acks = append(acks, f)
				}
			}
		}
		tick.Stop()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		testenv.AwaitAcks(b, ctx, acks)
		cancel()
		e.waitCaughtUp(b, time.Minute)
		stop()
		mu.Lock()
		defer mu.Unlock()
		slices.Sort(delays)
		pct := func(q float64) float64 {
			return float64(delays[int(q*float64(len(delays)-1))].Microseconds()) / 1000
		}
		b.ReportMetric(float64(g.Events)/duration.Seconds(), "events/s")
		b.ReportMetric(pct(0.5), "p50-ms")
		b.ReportMetric(pct(0.99), "p99-ms")
		b.ReportMetric(pct(1), "max-ms")
		b.ReportMetric(substrate, "pg-upserts/s")
	})
}

func forEachDurability(b *testing.B, f func(*testing.B, *testenv.Postgres)) {
	b.Run("fsync=off", func(b *testing.B) { f(b, pg) })
	b.Run("fsync=on", func(b *testing.B) { f(b, testenv.StartPostgresWith(b, testenv.PostgresOptions{Durable: true})) })
}

// upsertRate is the substrate figure: single-row upserts, 256 to a
// transaction, one round trip each, for about two seconds.
func upsertRate(b *testing.B, pool *pgxpool.Pool) float64 {
	b.Helper()
	ctx := context.Background()
	if _, err := pool.Exec(ctx, `CREATE TABLE IF NOT EXISTS bench_upsert (id text PRIMARY KEY, n bigint, at timestamptz)`); err != nil {
		b.Fatal(err)
	}
	rows := 0
	start := time.Now()
	for time.Since(start) < 2*time.Second {
		tx, err := pool.Begin(ctx)
		if err != nil {
			b.Fatal(err)
		}
		for i := range 256 {
			if _, err := tx.Exec(ctx, `INSERT INTO bench_upsert (id, n, at) VALUES ($1, 1, now())
				ON CONFLICT (id) DO UPDATE SET n = bench_upsert.n + 1, at = now()`, fmt.Sprintf("k%d", (rows+i)%5000)); err != nil {
				b.Fatal(err)
			}
		}
		if err := tx.Commit(ctx); err != nil {
			b.Fatal(err)
		}
		rows += 256
	}
	return float64(rows) / time.Since(start).Seconds()
}
