package events_test

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/synadia-io/orbit.go/jetstreamext"

	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/internal/testenv"
)

// On an R3 stream, ReadRaw, Missing and EventsHeld answer what the stream
// leader holds, also while the replica that answers direct gets lags
// behind it. A lagging follower cannot be held back on cue in-process
// (one stopped and restarted catches up within milliseconds of being
// allowed to answer), so lagProxy stands in for it: the store under test
// speaks to the cluster through it, and it answers direct gets from a
// snapshot of the stream taken earlier, as a replica that has applied
// nothing since would.
func TestLaggingReplica(t *testing.T) {
	c := testenv.StartNATSCluster(t, testenv.ClusterOptions{})
	nc, js := c.Connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// open makes streams of prefix on three replicas, and a store on them
	// that asks through a proxy: its direct gets are a snapshot's.
	open := func(t *testing.T, prefix string) (events.Names, *events.Store, *lagProxy) {
		t.Helper()
		names := events.NewNames(prefix)
		if err := events.EnsureStreams(ctx, js, names, events.StreamOptions{Replicas: 3}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			// A replica still catching up at shutdown can leave goroutines.
			for _, st := range []string{names.CommandStream(), names.SystemStream(), names.EventStream()} {
				c.WaitStreamCurrent(t, st, 30*time.Second)
			}
		})
		p := startLagProxy(t, nc, js, names.EventStream())
		// On the proxy's server, which knows of its subscription at once.
		pnc, err := nats.Connect(nc.ConnectedUrl())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(pnc.Close)
		pjs, err := jetstream.NewWithAPIPrefix(pnc, p.prefix)
		if err != nil {
			t.Fatal(err)
		}
		store, err := events.OpenStore(ctx, pjs, names, events.Codec{})
		if err != nil {
			t.Fatal(err)
		}
		return names, store, p
	}
	publish := func(t *testing.T, subject string, n int) {
		t.Helper()
		if _, err := js.Publish(ctx, subject, fmt.Appendf(nil, "m%d", n)); err != nil {
			t.Fatal(err)
		}
	}

	// Rebuild's read ends when, after half a second without a delivery,
	// nothing is left: a replica that lacks the tail must not say so.
	t.Run("ReadRawReadsPastTheReplica", func(t *testing.T) {
		names, store, p := open(t, "lagread")
		for i := 1; i <= 6; i++ {
			publish(t, names.Event("ws-a"), i)
			if i == 3 {
				p.snapshot(t, ctx, c) // the replica holds 1..3
			}
		}
		p.holdAfter(3) // the consumer delivers 1..3, then waits
		var got []uint64
		done := make(chan error, 1)
		go func() {
			done <- store.ReadRaw(ctx, 6, func(m events.RawMsg) error {
				got = append(got, m.StreamSeq)
				return nil
			})
		}()
		// Once the read has asked whether anything follows 3, let the
		// rest through. On a loaded host the ordered consumer may be made
		// again before its first pull is answered, and the hold (of the
		// first pull only) then holds every delivery: the read never gets
		// to 3 and asks only from 1. So wait at most a while, then let go
		// anyway: the read must still end with 1..6. (nextAt itself is
		// checked against the lagging replica in ReplicaBehindTheReader.)
		deadline := time.Now().Add(10 * time.Second)
		for !p.askedFrom(4) && time.Now().Before(deadline) {
			select {
			case <-time.After(20 * time.Millisecond):
			case <-ctx.Done():
				t.Fatal(ctx.Err())
			}
		}
		if !p.askedFrom(4) {
			t.Log("the read did not get to ask what follows 3 (its consumer was made again); the end check was not exercised this time")
		}
		p.release()
		if err := <-done; err != nil || fmt.Sprint(got) != "[1 2 3 4 5 6]" {
			t.Fatalf("read %v, %v; want 1..6", got, err)
		}
	})

	// A replica that has not applied a delete still holds the event:
	// counted on it, the gap would pass.
	t.Run("DeleteTheReplicaHasNotApplied", func(t *testing.T) {
		names, store, p := open(t, "lagdel")
		publish(t, names.Event("ws-a"), 1)
		publish(t, names.Outcome("c2"), 2)
		publish(t, names.Event("ws-a"), 3)
		publish(t, names.Outcome("c4"), 4)
		publish(t, names.Event("ws-a"), 5)
		p.snapshot(t, ctx, c)
		deleteMsg(t, ctx, js, names.EventStream(), 3)
		if got, err := store.Missing(ctx, 1, 5); err != nil || got != 1 {
			t.Errorf("missing between 1 and 5: %d, %v; want 1 (3 was deleted)", got, err)
		}
		if got, err := store.EventsHeld(ctx, "ws-a", 1, 5, 10); err != nil || got != 0 {
			t.Errorf("events of ws-a held between 1 and 5: %d, %v; want 0", got, err)
		}
		if got, err := store.Missing(ctx, 3, 5); err != nil || got != 0 {
			t.Errorf("missing between 3 and 5: %d, %v; want 0", got, err)
		}
	})

	// A replica that lacks the later of the two messages is behind: its
	// counts are not used.
	t.Run("ReplicaBehindTheReader", func(t *testing.T) {
		names, store, p := open(t, "lagbehind")
		for i := 1; i <= 3; i++ {
			publish(t, names.Outcome(fmt.Sprint("c", i)), i)
		}
		p.snapshot(t, ctx, c)
		publish(t, names.Outcome("c4"), 4)
		publish(t, names.Outcome("c5"), 5)
		publish(t, names.Event("ws-a"), 6)
		deleteMsg(t, ctx, js, names.EventStream(), 5)
		if got, err := store.Missing(ctx, 3, 6); err != nil || got != 1 {
			t.Errorf("missing between 3 and 6: %d, %v; want 1", got, err)
		}
		if got, err := store.Missing(ctx, 1, 6); err != nil || got != 1 {
			t.Errorf("missing between 1 and 6: %d, %v; want 1", got, err)
		}
		if at, err := store.StoredAt(ctx, 5); err != nil || at.IsZero() {
			t.Errorf("stored at 5: %v, %v; want message 6's time", at, err)
		}
	})

	// When the replica finds nothing missing, the leader walks the span
	// only up to the first message it lacks: the caller asks whether any
	// is, and a span can be a month of a busy stream.
	t.Run("LeaderWalkStopsAtTheFirstHole", func(t *testing.T) {
		names, store, p := open(t, "lagfirst")
		for i := 1; i <= 20; i++ {
			publish(t, names.Outcome(fmt.Sprint("c", i)), i)
		}
		p.snapshot(t, ctx, c)
		deleteMsg(t, ctx, js, names.EventStream(), 3)
		deleteMsg(t, ctx, js, names.EventStream(), 10)
		before := p.leaderGets()
		if got, err := store.Missing(ctx, 0, 20); err != nil || got != 1 {
			t.Errorf("missing between 0 and 20: %d, %v; want 1 (3 was deleted, and 10; the walk stops at 3)", got, err)
		}
		if gets := p.leaderGets() - before; gets > 3 {
			t.Errorf("the leader was asked %d times; want at most 3 (1, 2 and the one past 3)", gets)
		}
	})

	// Past leaderWalkMax (4,096) gets the walk stops and the replica's
	// counts answer: a delete the replica has not applied that far into
	// the span passes (docs/scale-out.md).
	t.Run("LeaderWalkIsBounded", func(t *testing.T) {
		const n, walkMax = 4200, 4096
		names, store, p := open(t, "lagbound")
		var acks []jetstream.PubAckFuture
		for i := 1; i <= n; i++ {
			f, err := js.PublishAsync(names.Outcome(fmt.Sprint("c", i)), fmt.Appendf(nil, "m%d", i))
			if err != nil {
				t.Fatal(err)
			}
			acks = append(acks, f)
			if i%500 != 0 && i != n {
				continue
			}
			// Within the client's limit on acks outstanding; and each of
			// the n stored, the span the walk below is about.
			testenv.AwaitAcks(t, ctx, acks)
			acks = acks[:0]
		}
		p.snapshot(t, ctx, c)
		deleteMsg(t, ctx, js, names.EventStream(), n-50)
		before := p.leaderGets()
		if got, err := store.Missing(ctx, 0, n); err != nil || got != 0 {
			t.Errorf("missing between 0 and %d: %d, %v; want 0, the replica's answer", n, got, err)
		}
		if gets := p.leaderGets() - before; gets > walkMax {
			t.Errorf("the leader was asked %d times; want at most %d", gets, walkMax)
		}
	})

	// direct is a store on the cluster itself, whose replicas are current.
	direct := func(t *testing.T, names events.Names) *events.Store {
		t.Helper()
		store, err := events.OpenStore(ctx, js, names, events.Codec{})
		if err != nil {
			t.Fatal(err)
		}
		return store
	}
	commit := func(t *testing.T, store *events.Store, ws []events.Write) {
		t.Helper()
		res, _ := store.Commit(ctx, ws, events.CommitOptions{})
		for i, r := range res {
			if r.Err != nil || r.Existing != nil {
				t.Fatalf("write %d: %+v", i, r)
			}
		}
	}
	configure := func(id, ws, n string) fsm.Command {
		return fsm.Command{ID: id, Type: fsm.Configure, Workspace: ws, Spec: &fsm.Spec{Env: map[string]string{"N": n}}}
	}

	// A command id sent again past the duplicate window, whose outcome the
	// replica lacks: decided again on the workspace's newer state, it must
	// get its outcome back and store no second event. Alone (one direct
	// get per outcome subject) and among 20 (one batch get).
	t.Run("OutcomeTheReplicaLacks", func(t *testing.T) {
		names, store, p := open(t, "lagout")
		leader := direct(t, names)
		const others = 19
		for i := range others + 2 {
			ws := fmt.Sprint("ws-", i)
			commit(t, leader, []events.Write{decided(t, events.Head{}, fsm.Command{ID: ws + "-create", Type: fsm.Create, Workspace: ws})})
		}
		p.snapshot(t, ctx, c) // the replica holds the creates
		for _, ws := range []string{"ws-0", "ws-1"} {
			// The first handling, its message ids past the window.
			w := decided(t, load(t, leader, ws), configure(ws+"-again", ws, "1"))
			for _, m := range []func() (*nats.Msg, error){
				func() (*nats.Msg, error) { return store.EventMsgForTest(*w.Event, w.Expected) },
				func() (*nats.Msg, error) { return store.OutcomeMsgForTest(w.Outcome) },
			} {
				msg, err := m()
				if err != nil {
					t.Fatal(err)
				}
				msg.Header.Del(jetstream.MsgIDHeader)
				if _, err := js.PublishMsg(ctx, msg); err != nil {
					t.Fatal(err)
				}
			}
			// Then the workspace moves on.
			commit(t, leader, []events.Write{decided(t, load(t, leader, ws), configure(ws+"-next", ws, "2"))})
		}
		c.WaitStreamCurrent(t, names.EventStream(), 30*time.Second)
		again := func(ws string) events.Write { return decided(t, load(t, leader, ws), configure(ws+"-again", ws, "1")) }
		batch := []events.Write{again("ws-1")}
		for i := range others {
			ws := fmt.Sprint("ws-", i+2)
			batch = append(batch, decided(t, load(t, leader, ws), configure(ws+"-fresh", ws, "1")))
		}
		for _, ws := range [][]events.Write{{again("ws-0")}, batch} {
			res, _ := store.Commit(ctx, ws, events.CommitOptions{})
			if r := res[0]; r.Err != nil || r.Existing == nil || r.Existing.CommandID != ws[0].Outcome.CommandID || r.EventSeq != 0 {
				t.Errorf("%s sent again: %+v (existing %+v); want its outcome back, nothing written", ws[0].Outcome.CommandID, r, r.Existing)
			}
			for i, r := range res[1:] {
				if r.Err != nil || r.Existing != nil || r.EventSeq == 0 {
					t.Errorf("fresh write %d beside it: %+v; want its event stored", i+1, r)
				}
			}
			id := ws[0].Outcome.Workspace
			if n, err := leader.EventsHeld(ctx, id, 0, math.MaxUint64, 10); err != nil || n != 3 {
				t.Errorf("events of %s: %d, %v; want 3 (create, the first handling's, the next)", id, n, err)
			}
		}
	})

	// A command handled again looks for the event an earlier handling
	// stored: the replica lacks it, behind an event it holds and where it
	// holds none of the workspace's events since.
	t.Run("FindEventTheReplicaLacks", func(t *testing.T) {
		names, store, p := open(t, "lagfind")
		leader := direct(t, names)
		before := time.Now().Add(-time.Minute)
		commit(t, leader, []events.Write{decided(t, events.Head{}, fsm.Command{ID: "a-create", Type: fsm.Create, Workspace: "ws-a"})})
		p.snapshot(t, ctx, c)
		commit(t, leader, []events.Write{decided(t, events.Head{}, fsm.Command{ID: "b-create", Type: fsm.Create, Workspace: "ws-b"})})
		for _, ws := range []string{"ws-a", "ws-b"} {
			for _, n := range []string{"1", "2"} {
				commit(t, leader, []events.Write{decided(t, load(t, leader, ws), configure(ws+"-"+n, ws, n))})
			}
		}
		for _, ws := range []string{"ws-a", "ws-b"} {
			env, ok, err := store.FindEvent(ctx, ws, ws+"-1", before)
			if err != nil || !ok || env.CommandID != ws+"-1" || env.Seq != 2 {
				t.Errorf("FindEvent of %s-1: %+v, %v, %v; want its event (seq 2)", ws, env, ok, err)
			}
			if _, ok, err := store.FindEvent(ctx, ws, ws+"-none", before); err != nil || ok {
				t.Errorf("FindEvent of a command without an event on %s: %v, %v; want none", ws, ok, err)
			}
		}
	})

	// Without a proxy, on the replicas as they are: the same answers.
	t.Run("R3", func(t *testing.T) {
		names := events.NewNames("r3")
		if err := events.EnsureStreams(ctx, js, names, events.StreamOptions{Replicas: 3}); err != nil {
			t.Fatal(err)
		}
		defer c.WaitStreamCurrent(t, names.EventStream(), 30*time.Second)
		store, err := events.OpenStore(ctx, js, names, events.Codec{})
		if err != nil {
			t.Fatal(err)
		}
		for i := 1; i <= 8; i++ {
			subject := names.Outcome(fmt.Sprint("c", i))
			if i%2 == 1 {
				subject = names.Event("ws-a")
			}
			publish(t, subject, i)
		}
		for _, seq := range []uint64{3, 4, 8} {
			deleteMsg(t, ctx, js, names.EventStream(), seq)
		}
		c.WaitStreamCurrent(t, names.EventStream(), 30*time.Second)
		var got []uint64
		if err := store.ReadRaw(ctx, 8, func(m events.RawMsg) error {
			got = append(got, m.StreamSeq)
			return nil
		}); err != nil || fmt.Sprint(got) != "[1 2 5 6 7]" {
			t.Fatalf("read %v, %v; want 1 2 5 6 7", got, err)
		}
		for _, c := range []struct{ after, before, want uint64 }{{1, 5, 2}, {2, 5, 2}, {4, 7, 0}, {0, 8, 2}, {5, 7, 0}} {
			if got, err := store.Missing(ctx, c.after, c.before); err != nil || got != c.want {
				t.Errorf("missing between %d and %d: %d, %v; want %d", c.after, c.before, got, err, c.want)
			}
		}
		for _, c := range []struct{ after, before, upTo, want uint64 }{{1, 7, 10, 1}, {1, 7, 1, 1}, {1, 7, 0, 0}, {1, 5, 10, 0}} {
			if got, err := store.EventsHeld(ctx, "ws-a", c.after, c.before, c.upTo); err != nil || got != c.want {
				t.Errorf("events held between %d and %d up to %d: %d, %v; want %d", c.after, c.before, c.upTo, got, err, c.want)
			}
		}
	})
}

func deleteMsg(t *testing.T, ctx context.Context, js jetstream.JetStream, stream string, seq uint64) {
	t.Helper()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteMsg(ctx, seq); err != nil {
		t.Fatal(err)
	}
}

// lagProxy passes JetStream API requests under its own prefix on to the
// cluster, but for direct gets of one stream, which it answers from a
// snapshot of that stream (a replica lagging since), and for consumer
// pulls, which it can cut short after a number of messages and hold back
// (a slow consumer). It records the stream sequences gets asked from.
type lagProxy struct {
	prefix string
	nc     *nats.Conn
	js     jetstream.JetStream
	stream string

	mu      sync.Mutex
	snap    []*jetstream.RawStreamMsg
	asked   []uint64
	leaders int         // leader message gets passed on
	hold    int         // > 0: the first pull asks for this many, later ones wait
	held    []*nats.Msg // pulls to send on release, the first one whole
}

func startLagProxy(t *testing.T, nc *nats.Conn, js jetstream.JetStream, stream string) *lagProxy {
	t.Helper()
	p := &lagProxy{prefix: "LAG." + stream + ".API", nc: nc, js: js, stream: stream}
	sub, err := nc.Subscribe(p.prefix+".>", p.serve)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return p
}

// snapshot takes the stream as it is now as the replica's, once every
// replica has it.
func (p *lagProxy) snapshot(t *testing.T, ctx context.Context, c *testenv.Cluster) {
	t.Helper()
	c.WaitStreamCurrent(t, p.stream, 30*time.Second)
	stream, err := p.js.Stream(ctx, p.stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var snap []*jetstream.RawStreamMsg
	// A direct batch get returns at most 1,000 messages.
	for seq := uint64(1); seq <= info.State.LastSeq; {
		msgs, err := jetstreamext.GetBatch(ctx, p.js, p.stream, 1000, jetstreamext.GetBatchSeq(seq))
		if err != nil {
			t.Fatal(err)
		}
		from := seq
		for m, err := range msgs {
			if err != nil {
				t.Fatal(err)
			}
			snap = append(snap, m)
			seq = m.Sequence + 1
		}
		if seq == from {
			t.Fatalf("snapshot: no message at or after %d", seq)
		}
	}
	p.mu.Lock()
	p.snap = snap
	p.mu.Unlock()
}

// holdAfter lets the consumer's first pull deliver n messages; the rest
// wait for release.
func (p *lagProxy) holdAfter(n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.hold = n
}

// release sends the pulls held back and stops holding.
func (p *lagProxy) release() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, m := range p.held {
		_ = p.nc.PublishMsg(m)
	}
	p.held, p.hold = nil, 0
}

// leaderGets is how many leader message gets the proxy passed on.
func (p *lagProxy) leaderGets() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.leaders
}

// askedFrom reports whether a get (direct or the leader's) asked from seq
// or later.
func (p *lagProxy) askedFrom(seq uint64) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, a := range p.asked {
		if a >= seq {
			return true
		}
	}
	return false
}

// directRequest is what lagProxy reads of a direct get's request.
type directRequest struct {
	Seq       uint64     `json:"seq"`
	Batch     int        `json:"batch"`
	NextFor   string     `json:"next_by_subj"`
	LastFor   string     `json:"last_by_subj"`
	MultiLast []string   `json:"multi_last"`
	UpToSeq   uint64     `json:"up_to_seq"`
	StartTime *time.Time `json:"start_time"`
}

func (p *lagProxy) serve(m *nats.Msg) {
	api := strings.TrimPrefix(m.Subject, p.prefix+".")
	var req directRequest
	switch {
	case api == "DIRECT.GET."+p.stream:
		_ = json.Unmarshal(m.Data, &req)
		p.record(req.Seq)
		p.answerDirect(m.Reply, req)
		return
	case strings.HasPrefix(api, "DIRECT.GET."+p.stream+"."):
		// The last message on the subject after the stream's name.
		p.answerDirect(m.Reply, directRequest{LastFor: strings.TrimPrefix(api, "DIRECT.GET."+p.stream+".")})
		return
	case api == "STREAM.MSG.GET."+p.stream:
		_ = json.Unmarshal(m.Data, &req)
		p.record(req.Seq)
		p.mu.Lock()
		p.leaders++
		p.mu.Unlock()
	}
	out := &nats.Msg{Subject: jetstream.DefaultAPIPrefix + api, Reply: m.Reply, Header: m.Header, Data: m.Data}
	if strings.HasPrefix(api, "CONSUMER.MSG.NEXT.") {
		if out = p.pull(out); out == nil {
			return
		}
	}
	_ = p.nc.PublishMsg(out)
}

// pull is what to send for consumer pull m now, nil: nothing yet. While
// holding, the first pull asks for the messages to let through, and is
// sent again whole on release; later ones wait for it.
func (p *lagProxy) pull(m *nats.Msg) *nats.Msg {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.hold == 0 {
		return m
	}
	p.held = append(p.held, m)
	if len(p.held) > 1 {
		return nil
	}
	var body map[string]any
	if err := json.Unmarshal(m.Data, &body); err != nil {
		return m
	}
	body["batch"] = p.hold
	short := *m
	short.Data, _ = json.Marshal(body)
	return &short
}

func (p *lagProxy) record(seq uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.asked = append(p.asked, seq)
}

// answerDirect answers as a replica holding the snapshot: the last
// message on req.LastFor, or on each of req.MultiLast (up to req.UpToSeq),
// or up to req.Batch messages (one without) at or after req.Seq or
// req.StartTime (on subject req.NextFor, exact, if set), each with how
// many more it holds; a batch then ends with the end of the batch. 404
// with none.
func (p *lagProxy) answerDirect(reply string, req directRequest) {
	p.mu.Lock()
	var match []*jetstream.RawStreamMsg
	switch {
	case req.LastFor != "" || len(req.MultiLast) > 0:
		for _, subject := range append(req.MultiLast, req.LastFor) {
			var last *jetstream.RawStreamMsg
			for _, s := range p.snap {
				if s.Subject == subject && (req.UpToSeq == 0 || s.Sequence <= req.UpToSeq) {
					last = s
				}
			}
			if last != nil {
				match = append(match, last)
			}
		}
		slices.SortFunc(match, func(a, b *jetstream.RawStreamMsg) int { return cmp.Compare(a.Sequence, b.Sequence) })
	default:
		for _, s := range p.snap {
			at := s.Sequence >= req.Seq
			if req.StartTime != nil {
				at = !s.Time.Before(*req.StartTime)
			}
			if at && (req.NextFor == "" || req.NextFor == ">" || req.NextFor == s.Subject) {
				match = append(match, s)
			}
		}
	}
	p.mu.Unlock()
	if len(match) == 0 {
		_ = p.nc.PublishMsg(&nats.Msg{Subject: reply, Header: nats.Header{"Status": {"404"}, "Description": {"Message Not Found"}}})
		return
	}
	batch := req.Batch > 0 || len(req.MultiLast) > 0
	n := len(match)
	if req.Batch > 0 {
		n = min(req.Batch, n)
	} else if !batch {
		n = 1
	}
	var last uint64
	for i, s := range match[:n] {
		h := nats.Header{}
		h.Set(jetstream.StreamHeader, p.stream)
		h.Set(jetstream.SubjectHeader, s.Subject)
		h.Set(jetstream.SequenceHeader, strconv.FormatUint(s.Sequence, 10))
		h.Set(jetstream.TimeStampHeaer, s.Time.Format(time.RFC3339Nano))
		h.Set("Nats-Num-Pending", strconv.Itoa(len(match)-i-1))
		h.Set("Nats-Last-Sequence", strconv.FormatUint(last, 10))
		_ = p.nc.PublishMsg(&nats.Msg{Subject: reply, Header: h, Data: s.Data})
		last = s.Sequence
	}
	if batch {
		_ = p.nc.PublishMsg(&nats.Msg{Subject: reply, Header: nats.Header{"Status": {"204"}, "Description": {"EOB"},
			"Nats-Num-Pending": {strconv.Itoa(len(match) - n)}, "Nats-Last-Sequence": {strconv.FormatUint(last, 10)}}})
	}
}
