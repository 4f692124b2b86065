package bench_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/synadia-io/orbit.go/jetstreamext"
	"golang.org/x/sync/errgroup"

	"github.com/turnstile-dev/turnstile/engine"
	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/internal/testenv"
)

// contender is one thing measured in a run's A B … B A order.
type contender struct {
	name string
	run  func(ctx context.Context, d time.Duration, record bool) error
	take func() figures
}

// engineContender is Turnstile end to end (the versus mix) at clients.
// Several may share s (one mix, other client counts): each keeps its own
// samples.
func engineContender(name string, s *side, clients int) contender {
	own := &side{}
	return contender{name: name,
		run: func(ctx context.Context, d time.Duration, record bool) error {
			if err := s.run(ctx, clients, d, record); err != nil {
				return err
			}
			own.lat, own.elapsed = append(own.lat, s.lat...), own.elapsed+s.elapsed
			s.lat, s.elapsed = nil, 0
			return nil
		},
		take: own.take}
}

// measure warms each contender up once, then runs each for row in two
// halves, in the order A B … B A, so that a drift of the shared host
// during the run hits all alike, and returns their figures in order.
func measure(ctx context.Context, tb testing.TB, cs []contender, warm, row time.Duration) []figures {
	tb.Helper()
	order := slices.Clone(cs)
	for _, c := range cs {
		if err := c.run(ctx, warm, false); err != nil {
			tb.Fatalf("%s: warm-up: %v", c.name, err)
		}
	}
	for i := len(cs) - 1; i >= 0; i-- {
		order = append(order, cs[i])
	}
	for _, c := range order {
		if err := c.run(ctx, row/2, true); err != nil {
			tb.Fatalf("%s: %v", c.name, err)
		}
	}
	out := make([]figures, len(cs))
	for i, c := range cs {
		out[i] = c.take()
	}
	return out
}

// streamsConfig sizes the event streams benchmarks.
type streamsConfig struct {
	versusConfig
	streams []int // event stream counts
	writers int   // connections writing the pattern
	// perStream, if set, gives every stream this many writers of its own
	// (writers = perStream × streams) instead of sharing writers.
	perStream int
	// r3Engines is how many engines run on the R3 cluster
	// (BENCH_R3_ENGINES, default 1): they split the command partitions.
	r3Engines int
}

func newStreamsConfig(tb testing.TB, streams []int) streamsConfig {
	c := streamsConfig{versusConfig: newVersusConfig(tb), streams: streams, writers: 4, r3Engines: 1}
	if v := os.Getenv("BENCH_R3_ENGINES"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 5 {
			tb.Fatalf("BENCH_R3_ENGINES=%q: want 1 to 5", v)
		}
		c.r3Engines = n
	}
	if v := os.Getenv("BENCH_STREAMS"); v != "" {
		c.streams = nil
		for f := range strings.SplitSeq(v, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n < 1 || n > 16 {
				tb.Fatalf("BENCH_STREAMS=%q: want a comma-separated list of 1 to 16", v)
			}
			c.streams = append(c.streams, n)
		}
	}
	if v := os.Getenv("BENCH_WRITERS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			tb.Fatalf("BENCH_WRITERS=%q: want a positive number", v)
		}
		c.writers = n
	}
	if v := os.Getenv("BENCH_WRITERS_PER_STREAM"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			tb.Fatalf("BENCH_WRITERS_PER_STREAM=%q: want a positive number", v)
		}
		c.perStream = n
		c.writers = n * slices.Max(c.streams)
		return c
	}
	// Every stream gets the same number of writers.
	for _, k := range c.streams {
		if c.writers%k != 0 {
			tb.Fatalf("%d writers do not divide over %d streams (BENCH_WRITERS)", c.writers, k)
		}
	}
	return c
}

// batchFor is a writer's batch with k streams: 500 commands in flight over
// all writers, at most the engine's 256 (engine.Config.MaxBatch), and
// small enough that a writer's two batches in flight (pipelined) never
// share a workspace.
func (c streamsConfig) batchFor(k int) int {
	w := c.writers
	if c.perStream > 0 {
		w = c.perStream * k
	}
	return min(256, 500/w, benchWorkspaces/w/2)
}

// conns are the writers' connections for k streams.
func (c streamsConfig) conns(all []jetstream.JetStream, k int) []jetstream.JetStream {
	if c.perStream > 0 {
		return all[:c.perStream*k]
	}
	return all
}

// BenchmarkEventStreams answers issue 13 item 3: does splitting the events
// stream into 1, 2 or 4 streams lift the engine's ceiling on one node?
//
// It drives the engine's write pattern (events/commit.go) straight at the
// server, without the engine: 1,000 workspaces spread evenly over k
// streams shaped as the events stream (subjects <p>.evt.<ws> and
// <p>.out.<cmd>, atomic publish, TTLs, dedupe); per stream, writers/k
// connections, each owning its stream's workspaces i with i/k mod (writers/k)
// equal to its number, writing batches of 125 commands (batchFor). Per batch
// at the server's default durability: the outcome subjects checked in one
// batch get, every event sent as an async publish with the workspace's
// expected last subject sequence and the command id as message id, each
// outcome (expected last subject sequence 0) sent as soon as its event's
// ack is in, and the outcomes' acks awaited only after the next batch's
// events are out (StartCommit's pipelining). At sync_always, as serve
// configures it: events and outcomes of a batch in one atomic batch. A
// command counts when its outcome is acked; its latency is from its
// batch's start. So with 4 writers and batches of 125 up to 500 commands
// are in flight, as with the engine's 512.
//
// Beside it in the same run on the same server: the raw CAS rate (64
// appenders, rawCASRate) and Turnstile end to end (the versus mix at 512
// clients): where the engine stands against the pattern and the raw rate.
// All contenders run in the order A B … B A.
//
//	go test -run '^$' -bench EventStreams -benchtime 1x -count 2 ./bench/
//
// BENCH_STREAMS (default 1,2,4) picks the stream counts, BENCH_WRITERS
// (default 4) the writers, shared by the streams;
// BENCH_WRITERS_PER_STREAM=n gives each stream n writers of its own
// instead (the engine today has one committer: n=1 is one committer per
// stream), with 500 commands in flight over all writers (batchFor);
// BENCH_ROW_SECONDS (default 4) each contender's
// measured time, BENCH_SMALL=1 (or -short) shrinks it to a smoke run.
func BenchmarkEventStreams(b *testing.B) {
	cfg := newStreamsConfig(b, []int{1, 2, 4})
	var table []string
	for _, d := range durabilityPairs {
		b.Run(d.name, func(b *testing.B) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
			defer cancel()
			core, ts := startTurnstile(b, d.jsSync)
			if err := ts.setup(ctx, 64); err != nil {
				b.Fatalf("turnstile: setup: %v", err)
			}
			conns := connectWriters(b, core, cfg.writers)
			cs := []contender{engineContender("engine", ts, 512)}
			for _, k := range cfg.streams {
				cs = append(cs, newPattern(ctx, b, cfg.conns(conns, k), "EVT"+strconv.Itoa(k), k, 1, cfg.batchFor(k), d.jsSync).contender())
			}
			for range b.N {
				raw := rawCASRate(ctx, b, core, 64, cfg.raw)
				fs := measure(ctx, b, cs, cfg.warm, cfg.row)
				// The ratio is to one stream (the first count listed).
				one := fs[1].rate
				for i, f := range fs {
					streams, vsOne := "engine (512 clients)", "–"
					if i > 0 {
						streams = strconv.Itoa(cfg.streams[i-1])
						vsOne = fmt.Sprintf("%.2f", f.rate/one)
					}
					b.ReportMetric(f.rate, cs[i].name+"_cmds/s")
					line := fmt.Sprintf("| %s | %s | %s | %s | %.1f | %.1f | %s | %.2f |", jsDurability(d.jsSync), streams, thousands(f.rate),
						vsOne, f.p50, f.p99, thousands(raw), f.rate/raw)
					b.Logf("%s: %d commands\n%s", cs[i].name, f.n, line)
					table = append(table, line)
				}
				b.ReportMetric(raw, "raw_cas/s")
			}
		})
	}
	if len(table) > 0 {
		fmt.Printf("\n| durability | event streams | commands/s | × 1 stream | p50 ms | p99 ms | raw CAS appends/s | × raw |\n|---|---|---|---|---|---|---|---|\n%s\n\n",
			strings.Join(table, "\n"))
	}
}

// BenchmarkClusterR3 puts the same write pattern (one events stream) and
// Turnstile end to end (one engine, the versus mix at 64 and 512 clients)
// on a 3-node cluster of in-process nats-servers routed over loopback,
// every stream at 3 replicas, beside the same on one node at 1 replica,
// both running at once and measured in the order A B … B A, each beside
// the raw CAS rate at its replicas.
//
//	go test -run '^$' -bench ClusterR3 -benchtime 1x -count 2 ./bench/
//
// BENCH_STREAMS (default 1) picks the pattern's stream counts;
// BENCH_R3_ENGINES (default 1) the engines on the cluster, in one process
// (they split the partitions as serves would); the rest as
// BenchmarkEventStreams.
func BenchmarkClusterR3(b *testing.B) {
	cfg := newStreamsConfig(b, []int{1})
	var table []string
	for _, d := range durabilityPairs {
		b.Run(d.name, func(b *testing.B) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
			defer cancel()
			engineCfg := engine.Config{AtomicBatchFrom: atomicFrom(d.jsSync)}
			cluster := testenv.StartNATSCluster(b, testenv.ClusterOptions{SyncAlways: d.jsSync})
			setups := []struct {
				name     string
				replicas int
				core     *testenv.Core
			}{
				{"R1, 1 node", 1, testenv.StartCore(b, testenv.CoreOptions{NATS: testenv.NATSOptions{SyncAlways: d.jsSync}, Engine: engineCfg})},
				{fmt.Sprintf("R3, 3 nodes, %d engine(s)", cfg.r3Engines), 3, testenv.StartCore(b, testenv.CoreOptions{Cluster: cluster, Replicas: 3,
					Engine: engineCfg, Engines: cfg.r3Engines})},
			}
			names := events.NewNames("")
			for _, st := range []string{names.CommandStream(), names.SystemStream(), names.EventStream()} {
				cluster.WaitStreamCurrent(b, st, 30*time.Second)
			}
			var cs []contender
			var what []string // setup of each contender
			for _, s := range setups {
				ts := newTurnstileSide(b, s.core)
				if err := ts.setup(ctx, 64); err != nil {
					b.Fatalf("%s: setup: %v", s.name, err)
				}
				conns := connectWriters(b, s.core, cfg.writers)
				for _, k := range cfg.streams {
					c := newPattern(ctx, b, cfg.conns(conns, k), "EVT"+strconv.Itoa(k), k, s.replicas, cfg.batchFor(k), d.jsSync).contender()
					c.name = fmt.Sprintf("r%d_%s", s.replicas, c.name)
					cs = append(cs, c)
					what = append(what, fmt.Sprintf("%s | write pattern, %d event stream(s)", s.name, k))
				}
				for _, clients := range []int{64, 512} {
					cs = append(cs, engineContender(fmt.Sprintf("r%d_engine%d", s.replicas, clients), ts, clients))
					what = append(what, fmt.Sprintf("%s | %d clients", s.name, clients))
				}
			}
			// The raw stream made and replicated before it is measured: a
			// fresh R3 stream's first publishes can meet no leader.
			if _, err := setups[1].core.JS.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: "RAW",
				Subjects: []string{"raw.>"}, Replicas: 3}); err != nil {
				b.Fatal(err)
			}
			cluster.WaitStreamCurrent(b, "RAW", 30*time.Second)
			for range b.N {
				raws := make([]float64, len(setups))
				for i, s := range setups {
					raws[i] = rawCASRateOn(ctx, b, s.core.JS, s.replicas, 64, cfg.raw)
				}
				fs := measure(ctx, b, cs, cfg.warm, cfg.row)
				for i, f := range fs {
					raw := raws[0]
					if strings.HasPrefix(what[i], "R3") {
						raw = raws[1]
					}
					b.ReportMetric(f.rate, cs[i].name+"_cmds/s")
					line := fmt.Sprintf("| %s | %s | %s | %.1f | %.1f | %s | %.2f |", jsDurability(d.jsSync), what[i], thousands(f.rate),
						f.p50, f.p99, thousands(raw), f.rate/raw)
					b.Logf("%d commands\n%s", f.n, line)
					table = append(table, line)
				}
			}
		})
	}
	if len(table) > 0 {
		fmt.Printf("\n| durability | setup | what | commands/s | p50 ms | p99 ms | raw CAS appends/s (same replicas) | × raw |\n|---|---|---|---|---|---|---|---|\n%s\n\n",
			strings.Join(table, "\n"))
	}
}

func jsDurability(syncAlways bool) string {
	if syncAlways {
		return "sync_always"
	}
	return "default"
}

// atomicFrom is the engine's AtomicBatchFrom as serve sets it: atomic
// batches only where the server fsyncs every write.
func atomicFrom(syncAlways bool) int {
	if syncAlways {
		return engine.DefaultAtomicBatchFrom
	}
	return -1
}

// connectWriters opens the pattern's connections, one JetStream context
// each. Their acks may take longer than the default 5 s: on this shared
// host, at sync_always, an atomic batch's first ack once did (its flow
// control waits on the JetStream context's timeout).
func connectWriters(tb testing.TB, core *testenv.Core, n int) []jetstream.JetStream {
	tb.Helper()
	out := make([]jetstream.JetStream, n)
	for i := range out {
		nc, _ := core.ConnectOwn(tb) // as the engine writes: in-process with startTurnstile's core
		js, err := jetstream.New(nc, jetstream.WithDefaultTimeout(30*time.Second))
		if err != nil {
			tb.Fatal(err)
		}
		out[i] = js
	}
	return out
}

// pattern is the engine's write pattern over k event streams.
type pattern struct {
	name    string
	writers []*patternWriter

	mu      sync.Mutex
	lat     []time.Duration
	elapsed time.Duration
}

// newPattern creates k streams <name>_EVENTS_<i> (replicas each, shaped as
// events.EnsureStreams shapes the events stream) and their writers.
func newPattern(ctx context.Context, tb testing.TB, conns []jetstream.JetStream, name string, k, replicas, batch int, atomic bool) *pattern {
	tb.Helper()
	event, outcome := patternPayloads(tb)
	p := &pattern{name: fmt.Sprintf("streams%d", k)}
	perStream := len(conns) / k
	for i := range k {
		stream := fmt.Sprintf("%s_EVENTS_%d", name, i)
		prefix := fmt.Sprintf("%s.%d", strings.ToLower(name), i)
		if _, err := conns[0].CreateOrUpdateStream(ctx, jetstream.StreamConfig{
			Name: stream, Subjects: []string{prefix + ".evt.>", prefix + ".out.>"},
			Retention: jetstream.LimitsPolicy, Duplicates: 2 * time.Minute, Storage: jetstream.FileStorage,
			Replicas: replicas, AllowDirect: true, AllowAtomicPublish: true, AllowMsgTTL: true,
		}); err != nil {
			tb.Fatalf("stream %s: %v", stream, err)
		}
		for j := range perStream {
			w := &patternWriter{js: conns[i*perStream+j], stream: stream, prefix: prefix, batch: batch, atomic: atomic,
				id: fmt.Sprintf("%s-%d-%d-", name, i, j), event: event, outcome: outcome}
			// Workspaces i, i+k, … are stream i's; its writers take them in turn.
			for ws, n := i, 0; ws < benchWorkspaces; ws, n = ws+k, n+1 {
				if n%perStream == j {
					w.ws = append(w.ws, wsName(ws))
				}
			}
			w.last = make([]uint64, len(w.ws))
			p.writers = append(p.writers, w)
		}
	}
	return p
}

// patternPayloads are a real configure's envelope and outcome as the
// engine encodes them: the server stores bytes, so their size is what
// matters.
func patternPayloads(tb testing.TB) (event, outcome []byte) {
	tb.Helper()
	now := time.Now()
	create := fsm.Command{ID: "cmd-0000000000000000000001", Type: fsm.Create, Workspace: "ws-123", Actor: "bench-1"}
	d := fsm.Decide(fsm.Workspace{ID: "ws-123"}, create)
	w := events.NewEnvelope(create.ID, fsm.Workspace{ID: "ws-123"}, *d.Event, create, now).State
	cmd := fsm.Command{ID: "cmd-0000000000000000000002", Type: fsm.Configure, Workspace: "ws-123", Actor: "bench-1",
		Spec: &fsm.Spec{Env: map[string]string{"G": "12"}}}
	d = fsm.Decide(w, cmd)
	if d.Outcome != fsm.Accepted || d.Event == nil {
		tb.Fatalf("payload: %+v", d)
	}
	event, err := events.Codec{}.Encode(events.NewEnvelope(cmd.ID, w, *d.Event, cmd, now))
	if err != nil {
		tb.Fatal(err)
	}
	outcome, err = events.EncodeOutcome(events.OutcomeRecord{CommandID: cmd.ID, Workspace: cmd.Workspace,
		CommandType: cmd.Type, Actor: cmd.Actor, Outcome: fsm.Accepted, EventSeq: 2, Generation: 2, State: fsm.Provisioning,
		ReceivedAt: now, DecidedAt: now})
	if err != nil {
		tb.Fatal(err)
	}
	return event, outcome
}

func (p *pattern) contender() contender {
	return contender{name: p.name, run: p.run, take: p.take}
}

// run writes with every writer for d; each finishes the batches it started.
func (p *pattern) run(ctx context.Context, d time.Duration, record bool) error {
	g, ctx := errgroup.WithContext(ctx)
	start := time.Now()
	lats := make([][]time.Duration, len(p.writers))
	for i, w := range p.writers {
		g.Go(func() (err error) {
			lats[i], err = w.run(ctx, start.Add(d))
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	if record {
		p.mu.Lock()
		defer p.mu.Unlock()
		p.elapsed += time.Since(start)
		for _, l := range lats {
			p.lat = append(p.lat, l...)
		}
	}
	return nil
}

func (p *pattern) take() figures {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := side{lat: p.lat, elapsed: p.elapsed}
	p.lat, p.elapsed = nil, 0
	return s.take()
}

// patternWriter is one connection writing batches of its workspaces.
type patternWriter struct {
	js      jetstream.JetStream
	stream  string
	prefix  string
	ws      []string
	last    []uint64 // each workspace's newest event's stream sequence
	next    int      // the next batch starts at ws[next]
	batch   int
	atomic  bool
	id      string // command id prefix
	n       int    // commands written
	event   []byte
	outcome []byte
}

// pendingOutcomes are a batch's outcomes sent, their acks not yet awaited.
type pendingOutcomes struct {
	start time.Time
	fs    []jetstream.PubAckFuture
}

func (w *patternWriter) run(ctx context.Context, until time.Time) ([]time.Duration, error) {
	var lat []time.Duration
	var pending *pendingOutcomes
	for time.Now().Before(until) {
		at := w.nextBatch()
		if w.atomic {
			l, err := w.atomicBatch(ctx, at)
			if err != nil {
				return nil, err
			}
			lat = append(lat, l...)
			continue
		}
		p, err := w.startBatch(ctx, at)
		if err != nil {
			return nil, err
		}
		if pending != nil {
			if lat, err = pending.wait(ctx, lat); err != nil {
				return nil, err
			}
		}
		pending = p
	}
	if pending != nil {
		return pending.wait(ctx, lat)
	}
	return lat, nil
}

// nextBatch is the indices into w.ws of the next batch, taken in turn.
func (w *patternWriter) nextBatch() []int {
	at := make([]int, w.batch)
	for j := range at {
		at[j] = (w.next + j) % len(w.ws)
	}
	w.next = (w.next + w.batch) % len(w.ws)
	return at
}

func (w *patternWriter) cmdID() string {
	w.n++
	return w.id + strconv.Itoa(w.n)
}

func (w *patternWriter) eventMsg(i int, cmd string) *nats.Msg {
	m := nats.NewMsg(w.prefix + ".evt." + w.ws[i])
	m.Data = w.event
	m.Header.Set(jetstream.MsgIDHeader, cmd)
	m.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(w.last[i], 10))
	return m
}

func (w *patternWriter) outcomeMsg(cmd string) *nats.Msg {
	m := nats.NewMsg(w.prefix + ".out." + cmd)
	m.Data = w.outcome
	m.Header.Set(jetstream.MsgIDHeader, "out:"+cmd)
	m.Header.Set(jetstream.ExpectedLastSubjSeqHeader, "0")
	return m
}

// startBatch is StartCommit's plain path: the outcome check, the events,
// each outcome sent as its event's ack arrives.
func (w *patternWriter) startBatch(ctx context.Context, at []int) (*pendingOutcomes, error) {
	start := time.Now()
	cmds := make([]string, len(at))
	subjects := make([]string, len(at))
	for j := range at {
		cmds[j] = w.cmdID()
		subjects[j] = w.prefix + ".out." + cmds[j]
	}
	msgs, err := jetstreamext.GetLastMsgsFor(ctx, w.js, w.stream, subjects)
	if err != nil {
		return nil, fmt.Errorf("outcome check: %w", err)
	}
	for m, err := range msgs {
		if errors.Is(err, jetstreamext.ErrNoMessages) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("outcome check: %w", err)
		}
		return nil, fmt.Errorf("outcome check: %s has an outcome already", m.Subject)
	}
	evs := make([]jetstream.PubAckFuture, len(at))
	for j, i := range at {
		if evs[j], err = w.js.PublishMsgAsync(w.eventMsg(i, cmds[j])); err != nil {
			return nil, fmt.Errorf("event: %w", err)
		}
	}
	p := &pendingOutcomes{start: start, fs: make([]jetstream.PubAckFuture, len(at))}
	for j, i := range at {
		ack, err := awaitAck(ctx, evs[j])
		if err != nil {
			return nil, fmt.Errorf("event of %s: %w", w.ws[i], err)
		}
		w.last[i] = ack.Sequence
		if p.fs[j], err = w.js.PublishMsgAsync(w.outcomeMsg(cmds[j])); err != nil {
			return nil, fmt.Errorf("outcome: %w", err)
		}
	}
	return p, nil
}

// wait awaits the outcomes' acks and appends each command's latency.
func (p *pendingOutcomes) wait(ctx context.Context, lat []time.Duration) ([]time.Duration, error) {
	for _, f := range p.fs {
		if _, err := awaitAck(ctx, f); err != nil {
			return nil, fmt.Errorf("outcome: %w", err)
		}
		lat = append(lat, time.Since(p.start))
	}
	return lat, nil
}

// awaitAck waits for one async publish's ack; a duplicate is an error (no
// command is written twice here).
func awaitAck(ctx context.Context, f jetstream.PubAckFuture) (*jetstream.PubAck, error) {
	t := time.NewTimer(30 * time.Second)
	defer t.Stop()
	select {
	case ack := <-f.Ok():
		if ack.Duplicate {
			return nil, fmt.Errorf("%s: stored as a duplicate", f.Msg().Subject)
		}
		return ack, nil
	case err := <-f.Err():
		return nil, err
	case <-t.C:
		return nil, fmt.Errorf("%s: no ack in 30s", f.Msg().Subject)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// atomicBatch is the sync_always path: the batch's events and outcomes in
// one atomic batch.
func (w *patternWriter) atomicBatch(ctx context.Context, at []int) ([]time.Duration, error) {
	start := time.Now()
	msgs := make([]*nats.Msg, 0, 2*len(at))
	for _, i := range at {
		cmd := w.cmdID()
		msgs = append(msgs, w.eventMsg(i, cmd), w.outcomeMsg(cmd))
	}
	ack, err := jetstreamext.PublishMsgBatch(ctx, w.js, msgs)
	if err != nil {
		return nil, fmt.Errorf("atomic batch: %w", err)
	}
	if ack.BatchSize != uint64(len(msgs)) {
		return nil, fmt.Errorf("atomic batch of %d stored %d", len(msgs), ack.BatchSize)
	}
	first := ack.Sequence - ack.BatchSize + 1
	lat := make([]time.Duration, len(at))
	for j, i := range at {
		w.last[i] = first + uint64(2*j)
		lat[j] = time.Since(start)
	}
	return lat, nil
}
