package engine_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/turnstile-dev/turnstile/client"
	"github.com/turnstile-dev/turnstile/engine"
	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/internal/testenv"
)

// durabilities are the two server settings every figure is measured under.
var durabilities = []struct {
	name string
	sync bool
}{{"default", false}, {"sync_always", true}}

// BenchmarkEndToEnd measures commands per second from client publish to
// outcome received over 1,000 workspaces, each command a configure that is
// accepted (so each pays intake, event and outcome), beside the raw rate of
// CAS appends on the same server. commit_ms is the mean time of one atomic
// batch of events and outcomes. The engine connects in-process, as serve's
// does (BENCH_TCP=1: over loopback TCP, as before 2026-12-04), the clients
// over TCP. BENCH_INFLIGHT (default 512) sets the commands in flight;
// BENCH_COMMITTERS and BENCH_BATCH the engine's; BENCH_PARTITIONS the
// streams' P (0: the default).
//
//	go test -run '^$' -bench EndToEnd -benchtime 20000x ./engine/
func BenchmarkEndToEnd(b *testing.B) {
	for _, d := range durabilities {
		b.Run(d.name, func(b *testing.B) {
			metrics := engine.NewMetrics(prometheus.NewRegistry())
			atomicFrom := -1 // as serve: atomic batches only where the server fsyncs every write
			if d.sync {
				atomicFrom = engine.DefaultAtomicBatchFrom
			}
			core := testenv.StartCore(b, testenv.CoreOptions{NATS: testenv.NATSOptions{SyncAlways: d.sync}, InProcess: os.Getenv("BENCH_TCP") == "", Partitions: envInt("BENCH_PARTITIONS", 0),
				Engine: engine.Config{Metrics: metrics, Committers: benchCommitters(), MaxBatch: benchBatch(), AtomicBatchFrom: atomicFrom}})
			const workspaces = 1000
			inflight := envInt("BENCH_INFLIGHT", 512)
			clients := make([]*client.Client, 8)
			for i := range clients {
				clients[i] = core.Client(b, fmt.Sprintf("bench-%d", i))
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
			defer cancel()
			run := func(n int, cmd func(i int) fsm.Command) []time.Duration {
				lat := make([]time.Duration, n)
				var next atomic.Int64
				var wg sync.WaitGroup
				for w := range inflight {
					cl := clients[w%len(clients)]
					wg.Go(func() {
						for {
							i := int(next.Add(1)) - 1
							if i >= n {
								return
							}
							start := time.Now()
							o, err := cl.Send(ctx, cmd(i))
							lat[i] = time.Since(start)
							if err != nil || o.Outcome != fsm.Accepted {
								b.Errorf("command %d: %+v %v", i, o, err)
								return
							}
						}
					})
				}
				wg.Wait()
				return lat
			}
			run(workspaces, func(i int) fsm.Command {
				return fsm.Command{Type: fsm.Create, Workspace: fmt.Sprintf("bench-%d", i)}
			})
			raw := rawCASRate(b, core, 64, 20000)
			batches0 := histCount(metrics.Batches)
			commits0, commitSum0 := histCountSum(metrics.CommitSeconds)

			b.ResetTimer()
			start := time.Now()
			lat := run(b.N, func(i int) fsm.Command {
				return fsm.Command{Type: fsm.Configure, Workspace: fmt.Sprintf("bench-%d", i%workspaces),
					Spec: &fsm.Spec{Env: map[string]string{"N": fmt.Sprint(i)}}}
			})
			elapsed := time.Since(start)
			b.StopTimer()
			slices.Sort(lat)
			rate := float64(b.N) / elapsed.Seconds()
			b.ReportMetric(rate, "cmds/s")
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50_ms")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99_ms")
			b.ReportMetric(raw, "raw_cas/s")
			b.ReportMetric(rate/raw, "ratio")
			b.ReportMetric(float64(b.N)/float64(max(1, histCount(metrics.Batches)-batches0)), "cmds/commit")
			commits, commitSum := histCountSum(metrics.CommitSeconds)
			b.ReportMetric((commitSum-commitSum0)*1000/float64(max(1, commits-commits0)), "commit_ms")
		})
	}
}

// rawCASRate is the substrate: appenders on distinct subjects, each
// publishing with an expected last subject sequence and waiting for its ack.
func rawCASRate(tb testing.TB, core *testenv.Core, appenders, total int) float64 {
	ctx := context.Background()
	_, js := core.ConnectOwn(tb) // as the engine writes
	if _, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: "RAW", Subjects: []string{"raw.>"}}); err != nil {
		tb.Fatal(err)
	}
	per := total / appenders
	var wg sync.WaitGroup
	start := time.Now()
	for a := range appenders {
		wg.Go(func() {
			subj := fmt.Sprintf("raw.%d", a)
			var last uint64
			payload := make([]byte, 400) // about an envelope's size
			for range per {
				ack, err := js.Publish(ctx, subj, payload, jetstream.WithExpectLastSequencePerSubject(last))
				if err != nil {
					tb.Errorf("raw append: %v", err)
					return
				}
				last = ack.Sequence
			}
		})
	}
	wg.Wait()
	return float64(per*appenders) / time.Since(start).Seconds()
}

// BenchmarkLoad compares loading a workspace with one event and with 10,000:
// one get-last-message call either way.
//
//	go test -run '^$' -bench Load ./engine/
func BenchmarkLoad(b *testing.B) {
	core := testenv.StartCore(b, testenv.CoreOptions{})
	ctx := context.Background()
	seed := func(id string, n int) {
		w := fsm.Workspace{ID: id}
		var last uint64
		for i := range n {
			cmd := fsm.Command{ID: fmt.Sprintf("%s-%d", id, i), Type: fsm.Configure, Workspace: id,
				Spec: &fsm.Spec{Env: map[string]string{"N": fmt.Sprint(i)}}}
			if i == 0 {
				cmd.Type, cmd.Spec = fsm.Create, nil
			}
			d := fsm.Decide(w, cmd)
			if d.Outcome != fsm.Accepted {
				b.Fatalf("seed: %+v", d)
			}
			env := events.NewEnvelope(cmd.ID, w, *d.Event, cmd, time.Now())
			res, _ := core.Store.Commit(ctx, []events.Write{{Event: &env, Expected: last,
				Outcome: events.OutcomeRecord{CommandID: cmd.ID, Workspace: id, CommandType: cmd.Type, Outcome: fsm.Accepted}}}, events.CommitOptions{})
			if res[0].Err != nil {
				b.Fatal(res[0].Err)
			}
			w, last = env.State, res[0].EventSeq
		}
	}
	seed("short", 1)
	seed("long", 10000)
	for _, id := range []string{"short", "long"} {
		b.Run(id, func(b *testing.B) {
			for b.Loop() {
				h, err := core.Store.Load(ctx, id)
				if err != nil || h.StreamSeq == 0 {
					b.Fatalf("load: %+v %v", h, err)
				}
			}
		})
	}
}

func benchCommitters() int { return envInt("BENCH_COMMITTERS", 0) }
func benchBatch() int      { return envInt("BENCH_BATCH", 0) }

func envInt(k string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(k)); err == nil {
		return v
	}
	return def
}
