package bench_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"github.com/turnstile-dev/turnstile/internal/testenv"
)

// BenchmarkPipelineFloor measures the bare JetStream message pattern that
// any engine of Turnstile's architecture must perform (a durable command
// stream, a pulling engine, a compare-and-set event per command, a direct
// reply), without Turnstile's code, beside Turnstile end to end and the
// raw CAS rate, in the same run on the same embedded server: how far the
// engine is from its floor, and whether goals stated as multiples of the
// raw CAS rate are reachable at all.
//
// Per durability (the server's default, and sync_always, server-wide) on
// one testenv core, and per client count C, in the order A B … B A
// (measure):
//
//   - engine: Turnstile end to end, the versus mix at C clients.
//   - floor 1 store: streams FLOOR_CMD (floor.cmd.>) and FLOOR_EVT
//     (floor.evt.>), shaped as Turnstile's (file storage, limits, a
//     2-minute duplicate window), and a durable pull consumer on
//     FLOOR_CMD (a new one per run, delivering what is published after
//     it: floor.run says why). C client goroutines on 8 connections, each owning the
//     workspaces i with i mod C equal to its number, taking them in turn:
//     publish a 350-byte command on floor.cmd.<ws> (JetStream publish,
//     unique Nats-Msg-Id, a header naming the client's reply subject),
//     wait for its PubAck, then for the reply. The engine side, on
//     connections of its own (one pulling, acking and replying, one
//     writing, as the engine's one committer), pulls 1,024 at a time and
//     for each command publishes a real envelope (patternPayloads) on
//     floor.evt.<ws> asynchronously, expecting the workspace's last event
//     sequence (kept in memory) and with the command id as message id; as
//     its ack arrives (futures read in order by a goroutine of their own,
//     so the pull never waits) it replies with the command id on the
//     client's subject and acks the command, as the engine does (reply,
//     then ack).
//   - floor 2 stores: the same, and an outcome per command on
//     floor.evt.out.<cmd> (expected last subject sequence 0, message id
//     out:<cmd>) sent when the event is acked; the reply after the
//     outcome's ack. Turnstile's pattern less its decisions.
//   - floor 2 stores + check: the same, and before the event a direct get
//     of the outcome subject (GetLastMsgForSubject), which must find
//     nothing: Turnstile's message pattern, one get per command.
//   - raw CAS: rawCASRate (64 appenders), a figure of its own.
//
// A command counts when its reply is in; its latency is from the client's
// publish to its reply. A failed publish, a duplicate, a refused CAS, an
// outcome found by the check or a reply not in within 30 s fails the
// benchmark. The floor always writes plain publishes, also at sync_always,
// where the engine writes atomic batches (atomicFrom).
//
//	go test -run '^$' -bench PipelineFloor -benchtime 1x ./bench/
//
// BENCH_CLIENTS (default 8,64,512) picks the rows; BENCH_ROW_SECONDS
// (default 4) each contender's measured time; BENCH_SMALL=1 (or -short)
// shrinks it to a smoke run.
func BenchmarkPipelineFloor(b *testing.B) {
	cfg := newVersusConfig(b)
	if !clientsSet() {
		cfg.clients = []int{8, 64, 512}
	}
	var table []string
	for _, d := range durabilityPairs {
		b.Run(d.name, func(b *testing.B) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
			defer cancel()
			core, ts := startTurnstile(b, d.jsSync)
			if err := ts.setup(ctx, 64); err != nil {
				b.Fatalf("turnstile: setup: %v", err)
			}
			fl := newFloor(ctx, b, core)
			for _, clients := range cfg.clients {
				b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
					cs := []contender{engineContender("engine", ts, clients)}
					for _, m := range []floorMode{floorOneStore, floorTwoStores, floorCheck} {
						cs = append(cs, fl.contender(m, clients))
					}
					for range b.N {
						raw := rawCASRate(ctx, b, core, 64, cfg.raw)
						fs := measure(ctx, b, cs, cfg.warm, cfg.row)
						eng := fs[0].rate
						for i, f := range fs {
							id := floorMetricIDs[i]
							b.ReportMetric(f.rate, id+"_cmds/s")
							b.ReportMetric(f.p99, id+"_p99_ms")
							line := fmt.Sprintf("| %s | %d | %s | %s | %.1f | %.1f | %.2f | %.2f |", jsDurability(d.jsSync), clients,
								cs[i].name, thousands(f.rate), f.p50, f.p99, f.rate/eng, f.rate/raw)
							b.Logf("%s: %d commands\n%s", cs[i].name, f.n, line)
							table = append(table, line)
						}
						b.ReportMetric(raw, "raw_cas/s")
						b.ReportMetric(eng/fs[3].rate, "engine_x_floor")
						table = append(table, fmt.Sprintf("| %s | %d | raw CAS (64 appenders) | %s | – | – | %.2f | 1.00 |",
							jsDurability(d.jsSync), clients, thousands(raw), raw/eng))
					}
				})
			}
		})
	}
	if len(table) > 0 {
		fmt.Printf("\n| durability | clients | contender | cmds/s | p50 ms | p99 ms | × engine | × raw CAS |\n|---|---|---|---|---|---|---|---|\n%s\n\n",
			strings.Join(table, "\n"))
	}
}

// floorMetricIDs name the contenders in b.ReportMetric units, in order.
var floorMetricIDs = []string{"engine", "floor1", "floor2", "floor2check"}

// clientsSet reports whether BENCH_CLIENTS chose the rows.
func clientsSet() bool {
	_, ok := os.LookupEnv("BENCH_CLIENTS")
	return ok
}

// floorMode is how much of Turnstile's pattern the floor's engine side
// writes per command.
type floorMode int

const (
	floorOneStore  floorMode = iota + 1 // the event
	floorTwoStores                      // the event, then the outcome
	floorCheck                          // the outcome check, the event, the outcome
)

func (m floorMode) String() string {
	switch m {
	case floorOneStore:
		return "floor 1 store"
	case floorTwoStores:
		return "floor 2 stores"
	default:
		return "floor 2 stores + check"
	}
}

const (
	floorReplyHeader = "Floor-Reply"
	floorCmdPrefix   = "floor.cmd.ws-"
	floorEvtPrefix   = "floor.evt."
	floorOutPrefix   = "floor.evt.out."
	floorPull        = 1024 // the engine's pull (engine.pullBatch)
	floorTimeout     = 30 * time.Second
)

// floor is the minimal pattern's streams, consumer and connections, shared
// by its three modes (they run one at a time, and share the workspaces'
// event subjects and so their last sequences).
type floor struct {
	clients []jetstream.JetStream // 8 connections
	inboxes []string              // each connection's reply subject prefix
	// replies[k] receives client k's replies (the command id).
	replies []chan []byte

	pull  *nats.Conn          // the engine side's pulls, acks and replies
	pjs   jetstream.JetStream // on pull: its consumers
	runs  atomic.Int64        // names each run's consumer
	write jetstream.JetStream // its events, outcomes and checks
	evt   jetstream.Stream

	last []atomic.Uint64 // each workspace's newest event's stream sequence
	ids  atomic.Uint64

	cmd, event, outcome []byte
}

func newFloor(ctx context.Context, tb testing.TB, core *testenv.Core) *floor {
	tb.Helper()
	event, outcome := patternPayloads(tb)
	f := &floor{replies: make([]chan []byte, benchWorkspaces), last: make([]atomic.Uint64, benchWorkspaces),
		cmd: make([]byte, 350), event: event, outcome: outcome}
	for i := range f.replies {
		f.replies[i] = make(chan []byte, 1)
	}
	tb.Logf("floor payloads: command %d bytes, event %d, outcome %d", len(f.cmd), len(f.event), len(f.outcome))
	for range 8 {
		nc, js := core.Connect(tb)
		inbox := nc.NewRespInbox()
		if _, err := nc.Subscribe(inbox+".*", f.onReply); err != nil {
			tb.Fatal(err)
		}
		f.clients, f.inboxes = append(f.clients, js), append(f.inboxes, inbox)
	}
	// The engine side connects as serve's engine does (in-process with
	// startTurnstile's core), the clients over TCP.
	f.pull, f.pjs = core.ConnectOwn(tb)
	_, f.write = core.ConnectOwn(tb)
	for _, cfg := range []jetstream.StreamConfig{
		{Name: "FLOOR_CMD", Subjects: []string{"floor.cmd.>"}},
		{Name: "FLOOR_EVT", Subjects: []string{"floor.evt.>"}},
	} {
		cfg.Retention, cfg.Storage, cfg.Duplicates, cfg.AllowDirect = jetstream.LimitsPolicy, jetstream.FileStorage, 2*time.Minute, true
		s, err := f.write.CreateOrUpdateStream(ctx, cfg)
		if err != nil {
			tb.Fatalf("stream %s: %v", cfg.Name, err)
		}
		if cfg.Name == "FLOOR_EVT" {
			f.evt = s
		}
	}
	return f
}

// onReply hands a reply on <inbox>.<client> to its client.
func (f *floor) onReply(m *nats.Msg) {
	k, err := strconv.Atoi(m.Subject[strings.LastIndexByte(m.Subject, '.')+1:])
	if err != nil || k < 0 || k >= len(f.replies) {
		return
	}
	select {
	case f.replies[k] <- m.Data:
	default: // not awaited: its client times out and says so
	}
}

// contender is the floor in mode m at clients.
func (f *floor) contender(m floorMode, clients int) contender {
	own := &side{}
	return contender{name: m.String(),
		run: func(ctx context.Context, d time.Duration, record bool) error {
			lat, elapsed, err := f.run(ctx, m, clients, d)
			if err != nil {
				return err
			}
			if record {
				own.lat, own.elapsed = append(own.lat, lat...), own.elapsed+elapsed
			}
			return nil
		},
		take: own.take}
}

// run drives the pattern with clients for d: the engine side started on
// a consumer of its own, the clients run (each finishes the command it
// started), the engine side stopped with nothing in flight, its consumer
// deleted. A consumer per run, delivering only what is published after
// it: a stopped pull iterator's request stays pending at the server until
// it expires, and a command delivered to it would come back only after
// the ack wait, to a client that waits as long. elapsed is the clients'
// time.
func (f *floor) run(ctx context.Context, m floorMode, clients int, d time.Duration) (lat []time.Duration, elapsed time.Duration, err error) {
	name := fmt.Sprintf("floor-%d", f.runs.Add(1))
	cons, err := f.pjs.CreateOrUpdateConsumer(ctx, "FLOOR_CMD", jetstream.ConsumerConfig{Durable: name,
		AckPolicy: jetstream.AckExplicitPolicy, AckWait: floorTimeout, MaxAckPending: 8192,
		DeliverPolicy: jetstream.DeliverNewPolicy})
	if err != nil {
		return nil, 0, fmt.Errorf("consumer: %w", err)
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), floorTimeout)
		defer cancel()
		if derr := f.pjs.DeleteConsumer(dctx, "FLOOR_CMD", name); derr != nil && err == nil {
			err = fmt.Errorf("delete consumer %s: %w", name, derr)
		}
	}()
	ectx, stop := context.WithCancel(ctx)
	defer stop()
	eg, ectx := errgroup.WithContext(ectx)
	if err := f.startEngine(ectx, eg, cons, m); err != nil {
		return nil, 0, err
	}
	lats := make([][]time.Duration, clients)
	cg, cctx := errgroup.WithContext(ectx)
	start := time.Now()
	until := start.Add(d)
	for k := range clients {
		cg.Go(func() (err error) {
			lats[k], err = f.client(cctx, k, clients, until)
			return err
		})
	}
	cerr := cg.Wait()
	elapsed = time.Since(start)
	stop()
	// The cause first: an engine side that failed cancels the clients, a
	// client that failed stops the engine side.
	eerr := eg.Wait()
	switch {
	case eerr != nil && !errors.Is(eerr, context.Canceled):
		return nil, 0, fmt.Errorf("engine side: %w", eerr)
	case cerr != nil:
		return nil, 0, cerr
	case eerr != nil:
		return nil, 0, fmt.Errorf("engine side: %w", eerr)
	}
	for _, l := range lats {
		lat = append(lat, l...)
	}
	return lat, elapsed, nil
}

// client k sends commands for its workspaces in turn until until, each
// after the last one's reply, and returns their latencies.
func (f *floor) client(ctx context.Context, k, clients int, until time.Time) ([]time.Duration, error) {
	js, reply := f.clients[k%len(f.clients)], f.inboxes[k%len(f.clients)]+"."+strconv.Itoa(k)
	replies := f.replies[k]
	owned := (benchWorkspaces - k + clients - 1) / clients // k, k+clients, ...
	timer := time.NewTimer(floorTimeout)
	defer timer.Stop()
	var lat []time.Duration
	for j := 0; time.Now().Before(until); j++ {
		ws := k + j%owned*clients
		id := "fc" + strconv.FormatUint(f.ids.Add(1), 10)
		m := nats.NewMsg(floorCmdPrefix + strconv.Itoa(ws))
		m.Data = f.cmd
		m.Header.Set(jetstream.MsgIDHeader, id)
		m.Header.Set(floorReplyHeader, reply)
		t0 := time.Now()
		ack, err := js.PublishMsg(ctx, m)
		if err != nil {
			return nil, fmt.Errorf("client %d: publish %s: %w", k, id, err)
		}
		if ack.Duplicate {
			return nil, fmt.Errorf("client %d: command %s stored as a duplicate", k, id)
		}
		timer.Reset(floorTimeout)
		select {
		case r := <-replies:
			if string(r) != id {
				return nil, fmt.Errorf("client %d: reply for %s while awaiting %s", k, r, id)
			}
		case <-timer.C:
			return nil, fmt.Errorf("client %d: no reply to %s (workspace %d) in %v", k, id, ws, floorTimeout)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		lat = append(lat, time.Since(t0))
	}
	return lat, nil
}

// floorCmd is one pulled command on its way through the engine side.
type floorCmd struct {
	msg          jetstream.Msg
	ws           int
	id, reply    string
	check        chan error // the outcome check's answer (floorCheck)
	evt, outcome jetstream.PubAckFuture
}

// startEngine starts the engine side in eg: a pull loop that sends each
// command's event (or, with the check, starts its check and hands it on
// to a goroutine that sends the event once the check is in), a goroutine
// awaiting the events' acks in order (then sending the outcome or
// finishing), and with outcomes one awaiting their acks. Each stage hands
// on in order over a channel and closes it when done; the pull stops when
// ctx ends.
func (f *floor) startEngine(ctx context.Context, eg *errgroup.Group, cons jetstream.Consumer, m floorMode) error {
	it, err := cons.Messages(jetstream.PullMaxMessages(floorPull))
	if err != nil {
		return fmt.Errorf("pull: %w", err)
	}
	eg.Go(func() error {
		<-ctx.Done()
		it.Stop()
		return nil
	})
	const buf = 8192 // above MaxAckPending: a stage never waits to hand on
	checked, sent, outcomes := make(chan *floorCmd, buf), make(chan *floorCmd, buf), make(chan *floorCmd, buf)
	var checks sync.WaitGroup
	eg.Go(func() error { // the pull loop
		defer checks.Wait()
		out := sent
		if m == floorCheck {
			out = checked
		}
		defer close(out)
		for {
			msg, err := it.Next()
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return nil
			}
			if err != nil {
				return fmt.Errorf("pull: %w", err)
			}
			c, err := parseFloorCmd(msg)
			if err != nil {
				return err
			}
			if m == floorCheck {
				c.check = make(chan error, 1)
				checks.Go(func() { c.check <- f.checkOutcome(ctx, c.id) })
			} else if err := f.sendEvent(c); err != nil {
				return err
			}
			if err := handOn(ctx, out, c); err != nil {
				return err
			}
		}
	})
	if m == floorCheck {
		eg.Go(func() error { // the events, each once its check is in
			defer close(sent)
			for c := range checked {
				select {
				case err := <-c.check:
					if err != nil {
						return err
					}
				case <-ctx.Done():
					return ctx.Err()
				}
				if err := f.sendEvent(c); err != nil {
					return err
				}
				if err := handOn(ctx, sent, c); err != nil {
					return err
				}
			}
			return nil
		})
	}
	eg.Go(func() error { // the events' acks
		defer close(outcomes)
		for c := range sent {
			ack, err := awaitAck(ctx, c.evt)
			if err != nil {
				return fmt.Errorf("event of %s (workspace %d): %w", c.id, c.ws, err)
			}
			f.last[c.ws].Store(ack.Sequence)
			if m == floorOneStore {
				f.finish(c)
				continue
			}
			om := nats.NewMsg(floorOutPrefix + c.id)
			om.Data = f.outcome
			om.Header.Set(jetstream.MsgIDHeader, "out:"+c.id)
			om.Header.Set(jetstream.ExpectedLastSubjSeqHeader, "0")
			if c.outcome, err = f.write.PublishMsgAsync(om); err != nil {
				return fmt.Errorf("outcome of %s: %w", c.id, err)
			}
			if err := handOn(ctx, outcomes, c); err != nil {
				return err
			}
		}
		return nil
	})
	if m != floorOneStore {
		eg.Go(func() error { // the outcomes' acks
			for c := range outcomes {
				if _, err := awaitAck(ctx, c.outcome); err != nil {
					return fmt.Errorf("outcome of %s: %w", c.id, err)
				}
				f.finish(c)
			}
			return nil
		})
	}
	return nil
}

func handOn(ctx context.Context, ch chan<- *floorCmd, c *floorCmd) error {
	select {
	case ch <- c:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func parseFloorCmd(msg jetstream.Msg) (*floorCmd, error) {
	ws, err := strconv.Atoi(strings.TrimPrefix(msg.Subject(), floorCmdPrefix))
	if err != nil || ws < 0 || ws >= benchWorkspaces {
		return nil, fmt.Errorf("command on %s: not a floor workspace", msg.Subject())
	}
	h := msg.Headers()
	c := &floorCmd{msg: msg, ws: ws, id: h.Get(jetstream.MsgIDHeader), reply: h.Get(floorReplyHeader)}
	if c.id == "" || c.reply == "" {
		return nil, fmt.Errorf("command on %s without an id or a reply subject", msg.Subject())
	}
	return c, nil
}

// checkOutcome is the outcome check: a direct get that must find nothing.
func (f *floor) checkOutcome(ctx context.Context, id string) error {
	_, err := f.evt.GetLastMsgForSubject(ctx, floorOutPrefix+id)
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		return nil
	case err == nil:
		return fmt.Errorf("outcome check of %s: it has an outcome already", id)
	default:
		return fmt.Errorf("outcome check of %s: %w", id, err)
	}
}

// sendEvent publishes c's event, expecting its workspace's last event.
func (f *floor) sendEvent(c *floorCmd) error {
	em := nats.NewMsg(floorEvtPrefix + wsName(c.ws))
	em.Data = f.event
	em.Header.Set(jetstream.MsgIDHeader, c.id)
	em.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(f.last[c.ws].Load(), 10))
	var err error
	if c.evt, err = f.write.PublishMsgAsync(em); err != nil {
		return fmt.Errorf("event of %s: %w", c.id, err)
	}
	return nil
}

// finish replies to c's client and acks c, as the engine's settle does.
func (f *floor) finish(c *floorCmd) {
	// Best effort, as the engine's: a lost reply fails the client's wait.
	_ = f.pull.Publish(c.reply, []byte(c.id))
	_ = c.msg.Ack()
}
