package engine

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/internal/jspull"
	"github.com/turnstile-dev/turnstile/internal/retry"
)

// Ownership. The command and system report streams are split into P
// partitions (events/partitions.go), each with its own durable consumer
// per stream. Every engine sharing the durable name announces itself in a
// KV bucket (a key per engine, refreshed every MemberTTL/4 and gone after
// MemberTTL without one), and every engine computes the same assignment of
// partitions to the live engines from that list. An engine pulls only the
// partitions assigned to it.
//
// The assignment can differ between engines for a moment (one has seen a
// join the other has not); the consumers' pinned priority group keeps even
// that safe: the server delivers a partition's commands to one client at a
// time, and moves the pin only when that client has unpinned or sent no pull
// for PinnedTTL (it died, or it let go of the partition).
//
// A takeover starts with the partition's unfinished commands, as a start
// does (recover.go): those the previous owner took and did not finish are
// queued first, ahead of anything the new owner pulls, so a workspace's
// order holds across a kill of any engine. A take runs apart from
// rebalance (that read can be long), one at a time per partition. After
// that every gap in the consumer sequence (deliveries that went to someone
// else) means commands this engine has not seen, and is caught up
// (gap.go). An engine letting go of a partition stops pulling it, hands
// back what it queued, finishes what it is handling and unpins if the pin
// is still its own, so the next owner is pinned at its next pull.

// PriorityGroup is the pinned priority group every engine pulls in; a
// reader of an engine consumer (a test, a tool) must name it.
const PriorityGroup = "engine"

// Defaults of the ownership timings (Config).
const (
	DefaultMemberTTL = 3 * time.Second
	DefaultPinnedTTL = 6 * time.Second
	// pullExpiry is how long a pull request waits; an idle owner sends a
	// new one that often, which keeps it pinned (PinnedTTL is twice as
	// long). Its heartbeats come every half of it, and two missed ones
	// fail the pull: shorter would fail pulls on a loaded host.
	pullExpiry = 3 * time.Second
)

// Member is an engine's entry in the members bucket.
type Member struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	// Since is when the engine opened.
	Since time.Time `json:"since"`
	// Partitions are those it pulls.
	Partitions []int `json:"partitions"`
	// P is the number of partitions it opened with; 0 from engines
	// before it was announced, taken as agreeing with every P.
	P int `json:"p,omitempty"`
	// Provisioner and ProvisionerHint are Config's: the container engine
	// the engine's serve provisions on, and its description; empty from
	// engines before they were announced, which agree with every other.
	Provisioner     string `json:"provisioner,omitempty"`
	ProvisionerHint string `json:"provisioner_hint,omitempty"`
}

// decodeMember reads a members bucket value.
func decodeMember(b []byte) (Member, error) {
	var m Member
	if err := json.Unmarshal(b, &m); err != nil {
		return Member{}, err
	}
	if m.P != 0 && events.ValidatePartitions(m.P) != nil {
		return Member{}, fmt.Errorf("member %s: P %d: want 1 to %d", m.ID, m.P, events.MaxPartitions)
	}
	return m, nil
}

// MembersBucket is the KV bucket of the engines named durable.
func MembersBucket(n events.Names, durable string) string {
	return strings.ToUpper(n.Prefix) + "_ENGINES_" + sanitizeBucket(durable)
}

func sanitizeBucket(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-' {
			return r
		}
		return '_'
	}, s)
}

// ReadMembers returns the live engines named durable, oldest first; none if
// no engine ever ran.
func ReadMembers(ctx context.Context, js jetstream.JetStream, n events.Names, durable string) ([]Member, error) {
	kv, err := js.KeyValue(ctx, MembersBucket(n, durable))
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("engine members: %w", err)
	}
	st, err := js.Stream(ctx, "KV_"+kv.Bucket())
	if err != nil {
		return nil, fmt.Errorf("engine members: %w", err)
	}
	ids, err := liveIDs(ctx, st, kv.Bucket())
	if err != nil {
		return nil, err
	}
	var out []Member
	for _, id := range ids {
		e, err := kv.Get(ctx, id)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue // gone since
		}
		if err != nil {
			return nil, fmt.Errorf("engine members: %s: %w", id, err)
		}
		if m, err := decodeMember(e.Value()); err == nil {
			out = append(out, m)
		}
	}
	slices.SortFunc(out, func(a, b Member) int { return a.Since.Compare(b.Since) })
	return out, nil
}

// liveIDs lists the keys of the members bucket that hold a value.
func (o *owner) liveIDs(ctx context.Context) ([]string, error) {
	return liveIDs(ctx, o.st, o.kv.Bucket())
}

// liveIDs lists the keys of bucket (its stream st) that hold a value: one
// stream info request (a key listing would make a consumer each time).
func liveIDs(ctx context.Context, st jetstream.Stream, bucket string) ([]string, error) {
	prefix := "$KV." + bucket + "."
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(prefix+">"))
	if err != nil {
		return nil, fmt.Errorf("engine members: %w", err)
	}
	ids := make([]string, 0, len(info.State.Subjects))
	for s := range info.State.Subjects {
		ids = append(ids, strings.TrimPrefix(s, prefix))
	}
	slices.Sort(ids)
	return ids, nil
}

// agree checks that this engine's P is the command stream's (read afresh
// at most every MemberTTL: a cached info would not see another start's
// update) and that the live members ids announce it too. An engine whose P
// is not the stream's lets go of every partition and leaves the members,
// so that the others take them: the workspaces its partitions name are
// not those the stream stores there. hold: a live member announces another
// P (or an unreadable entry); then this engine takes and lets go of
// nothing, since an assignment over engines that give partitions different
// workspaces is no assignment, and which of the two is wrong shows only
// once one of them has read the stream; the wrong one leaves.
func (o *owner) agree(ctx context.Context, ids []string) (hold bool, err error) {
	e := o.e
	if now := time.Now(); o.checked.IsZero() || now.Sub(o.checked) >= e.cfg.MemberTTL {
		st, err := e.js.Stream(ctx, e.names.CommandStream())
		if err != nil {
			return false, fmt.Errorf("engine: partitions of %s: %w", e.names.CommandStream(), err)
		}
		if o.streamP, err = events.PartitionsOf(st.CachedInfo().Config, e.names); err != nil {
			return false, fmt.Errorf("engine: %w", err)
		}
		o.checked = now
		if o.streamP != e.parts {
			o.leaveForP(ctx)
			e.log.Error("engine: this engine's partitions are not the command stream's: it pulls nothing and has left the members; "+
				"another start changed the stream's P after this engine opened. Restart this serve with the stream's --partitions (or none)",
				"engine_partitions", e.parts, "stream_partitions", o.streamP, "stream", e.names.CommandStream())
		} else if o.wrongP.Swap(false) {
			e.log.Info("engine: the command stream's partitions are this engine's again; it rejoins the members", "partitions", e.parts)
		}
	}
	if o.wrongP.Load() {
		return false, nil
	}
	if o.memberOf == nil {
		o.memberOf = map[string]Member{}
	}
	var odd []string
	for _, id := range ids {
		if id == o.id {
			continue
		}
		m, ok := o.memberOf[id]
		if !ok {
			entry, err := o.kv.Get(ctx, id)
			if errors.Is(err, jetstream.ErrKeyNotFound) {
				continue // gone since
			}
			if err != nil {
				return false, fmt.Errorf("engine members: %s: %w", id, err)
			}
			if m, err = decodeMember(entry.Value()); err != nil {
				odd = append(odd, fmt.Sprintf("%s: unreadable entry: %v", id, err))
				continue // read again at the next look
			}
			o.memberOf[id] = m
		}
		if m.P != 0 && m.P != e.parts {
			odd = append(odd, fmt.Sprintf("%s (%s): P=%d", cmp.Or(m.Name, id), id, m.P))
		}
	}
	for id := range o.memberOf {
		if !slices.Contains(ids, id) {
			delete(o.memberOf, id)
		}
	}
	if len(odd) == 0 {
		o.heldOn = ""
		return false, nil
	}
	// Loud, but once per change and then every ten member TTLs.
	if on := strings.Join(odd, "; "); on != o.heldOn || time.Since(o.heldSince) >= 10*e.cfg.MemberTTL {
		o.heldOn, o.heldSince = on, time.Now()
		e.log.Error("engine: live engines disagree on the number of partitions: this engine takes and lets go of nothing until they agree; "+
			"restart the serves whose P is not the command stream's (each logs so) with the stream's --partitions (or none)",
			"engine_partitions", e.parts, "stream_partitions", o.streamP, "others", on, "pulls", o.partitions())
	}
	return true, nil
}

// leaveForP marks this engine's P wrong and deletes its member entry, the
// two under announcing so that no announcement lands after the delete.
func (o *owner) leaveForP(ctx context.Context) {
	o.announcing.Lock()
	defer o.announcing.Unlock()
	if o.wrongP.Swap(true) {
		return
	}
	o.removeEntry(ctx, "engine: leaving the members")
}

// Assign spreads parts partitions over the engines ids: each gets at most
// ceil(parts/len(ids)), and a partition goes to the first engine with room
// in its own order of the engines (a hash of engine and partition), so
// most partitions stay where they were when an engine joins or leaves.
// Every engine computes it alike from the same ids.
func Assign(parts int, ids []string) map[int]string {
	out := make(map[int]string, parts)
	if len(ids) == 0 {
		return out
	}
	room := (parts + len(ids) - 1) / len(ids)
	load := map[string]int{}
	order := slices.Clone(ids)
	for k := range parts {
		slices.SortFunc(order, func(a, b string) int {
			return cmp.Or(cmp.Compare(rank(b, k), rank(a, k)), strings.Compare(a, b))
		})
		for _, id := range order {
			if load[id] < room {
				out[k], load[id] = id, load[id]+1
				break
			}
		}
	}
	return out
}

func rank(id string, k int) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(id))
	_, _ = h.Write([]byte{byte(k), byte(k >> 8)})
	return h.Sum64()
}

// partition is one partition this engine pulls.
type partition struct {
	// pulled tracks the pull loops and their sweeps (gap.go), which run
	// under a context that cancel ends.
	pulled sync.WaitGroup
	cancel context.CancelFunc
	// handling is the context the partition's commands are handled under;
	// letGo ends it (stopHandling) once it has waited for them, so that a
	// command still in hand past the wait stops when the next owner takes
	// over, rather than race it.
	handling     context.Context
	stopHandling context.CancelFunc
	// pulls are the partition's pulls, by stream: letGo unpins only where
	// the consumer's pin is still the one its pull held (PinID).
	pulls map[string]*jspull.Iter
	// retaking is set once a pull loop of it ended by itself (retake).
	retaking atomic.Bool
}

// owner keeps this engine's membership and partitions.
type owner struct {
	e  *Engine
	kv jetstream.KeyValue
	st jetstream.Stream // the bucket's
	id string
	// announcing serializes announce: the heartbeat's and a rebalance's.
	announcing sync.Mutex

	mu    sync.Mutex
	owned map[int]*partition
	// acquiring are the partitions being taken (acquire runs apart from
	// rebalance), with the cancel of each take; acquires tracks them.
	acquiring map[int]context.CancelFunc
	acquires  sync.WaitGroup
	// handling holds each partition's handling context from the start of
	// its acquire (its recovered commands are queued before it is owned)
	// to the end of its letGo.
	handling map[int]*partition
	// retaken is when each partition was last taken afresh (retaken): a
	// pull that keeps ending by itself (a consumer that refuses every
	// pull) is taken afresh at most once per retakeSpacing.
	retakenAt map[int]time.Time
	// agreement on P (agree): wrongP is set while this engine's P is not
	// the command stream's, and it then neither pulls nor announces
	// itself. The rest is rebalance's alone (one runs at a time): the
	// stream's P as read at checked, and the members' entries by id (an
	// engine's P is fixed for its id).
	wrongP    atomic.Bool
	checked   time.Time
	streamP   int
	memberOf  map[string]Member
	heldSince time.Time
	heldOn    string

	// taken is, for each partition and stream, the stream's last sequence
	// when the partition was last taken: a command at or below it may have
	// been handled by an engine before (handledBefore). Kept after the
	// partition is let go (a command of it may still be in hand here).
	taken map[takenKey]uint64
	// pinOf is, for each partition and stream, the pin this engine's pull
	// held when it let go of the partition and could not unpin: the
	// consumer may still be pinned to it for PinnedTTL, and a pull of it
	// taken again meanwhile starts with it (jspull.Options.PinID) rather
	// than wait that out. Forgotten once unpinned, pinned to another
	// engine, or taken afresh (retaken). A pin the consumer no longer
	// holds costs one 423, after which the pull asks without one.
	pinOf map[takenKey]string
}

type takenKey struct {
	k      int
	stream string
}

// takenThrough returns the last sequence of stream when partition k was
// taken, if it was.
func (o *owner) takenThrough(k int, stream string) (uint64, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	seq, ok := o.taken[takenKey{k, stream}]
	return seq, ok
}

// openMembers creates (or binds) the members bucket and announces e.
func (e *Engine) openMembers(ctx context.Context, replicas int) (*owner, error) {
	kv, err := e.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      MembersBucket(e.names, e.cfg.Durable),
		Description: "Turnstile engines alive, and the command partitions each pulls",
		TTL:         e.cfg.MemberTTL,
		History:     1,
		Replicas:    replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("engine: members bucket: %w", err)
	}
	st, err := e.js.Stream(ctx, "KV_"+kv.Bucket())
	if err != nil {
		return nil, fmt.Errorf("engine: members bucket: %w", err)
	}
	o := &owner{e: e, kv: kv, st: st, id: e.cfg.NewID(), owned: map[int]*partition{}, handling: map[int]*partition{},
		taken: map[takenKey]uint64{}, pinOf: map[takenKey]string{}}
	if err := o.announce(ctx); err != nil {
		return nil, err
	}
	return o, nil
}

func (o *owner) announce(ctx context.Context) error {
	o.announcing.Lock()
	defer o.announcing.Unlock()
	if o.wrongP.Load() {
		return nil // out of the members until its P is the stream's (agree)
	}
	o.mu.Lock()
	parts := make([]int, 0, len(o.owned))
	for k := range o.owned {
		parts = append(parts, k)
	}
	o.mu.Unlock()
	slices.Sort(parts)
	b, err := json.Marshal(Member{ID: o.id, Name: cmp.Or(o.e.cfg.Name, o.id), Since: o.e.opened.UTC(), Partitions: parts, P: o.e.parts,
		Provisioner: o.e.cfg.Provisioner, ProvisionerHint: o.e.cfg.ProvisionerHint})
	if err != nil {
		return fmt.Errorf("engine: announce: %w", err)
	}
	if _, err := o.kv.Put(ctx, o.id, b); err != nil {
		return fmt.Errorf("engine: announce: %w", err)
	}
	return nil
}

// heartbeat keeps the announcement alive until ctx ends.
func (o *owner) heartbeat(ctx context.Context) {
	t := time.NewTicker(o.e.cfg.MemberTTL / 4)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := o.announce(ctx); err != nil && ctx.Err() == nil {
			o.e.log.Warn("engine: heartbeat", "err", err)
		}
	}
}

// balance follows the members and takes or lets go of partitions until ctx
// ends.
func (o *owner) balance(ctx context.Context, run context.Context) {
	// The takes it started end with ctx; Close waits for this.
	defer o.acquires.Wait()
	t := time.NewTicker(o.e.cfg.MemberTTL / 6)
	defer t.Stop()
	failures := 0
	for {
		if err := o.rebalance(ctx, run, false); err != nil {
			if ctx.Err() != nil {
				return
			}
			o.e.log.Warn("engine: partitions: cannot read the members; keeping what this engine pulls", "err", err)
			if retry.Sleep(ctx, retryDelay(failures)) != nil {
				return
			}
			failures++
			continue
		}
		failures = 0
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// rebalance lets go of the partitions no longer assigned to this engine and
// starts taking those newly assigned to it. A take goes on apart (ending
// with ctx) and rebalance does not wait for it unless wait: the read of a
// partition's unfinished commands can take long (recover.go), or not
// answer, and meanwhile this engine must go on following the members. A
// partition being taken is not taken again until that take ends; one
// assigned elsewhere meanwhile stops being taken.
func (o *owner) rebalance(ctx, run context.Context, wait bool) error {
	ids, err := o.liveIDs(ctx)
	if err != nil {
		return err
	}
	hold, err := o.agree(ctx, ids)
	if err != nil || hold {
		return err
	}
	wrongP := o.wrongP.Load()
	if !wrongP && !slices.Contains(ids, o.id) {
		// This engine's entry expired (a long pause, NATS away): say so
		// again before taking anything.
		if err := o.announce(ctx); err != nil {
			return err
		}
		ids = append(ids, o.id)
		slices.Sort(ids)
	}
	want := Assign(o.e.parts, ids)
	if wrongP {
		want = nil // every partition let go, none taken
	}
	o.mu.Lock()
	var drop, take []int
	for k := range o.owned {
		if want[k] != o.id {
			drop = append(drop, k)
		}
	}
	for k, stop := range o.acquiring {
		if want[k] != o.id {
			stop()
		}
	}
	if o.acquiring == nil {
		o.acquiring = map[int]context.CancelFunc{}
	}
	var taken []chan error
	for k := range o.e.parts {
		_, owned := o.owned[k]
		_, acquiring := o.acquiring[k]
		if owned || acquiring || want[k] != o.id {
			continue
		}
		actx, stop := context.WithCancel(ctx)
		o.acquiring[k] = stop
		done := make(chan error, 1)
		take, taken = append(take, k), append(taken, done)
		o.acquires.Go(func() {
			defer stop()
			err := o.acquire(actx, run, k)
			o.mu.Lock()
			delete(o.acquiring, k)
			o.mu.Unlock()
			switch {
			case err == nil:
				o.e.log.Info("engine: partition taken", "partition", k, "pulls", o.partitions())
				if err := o.announce(ctx); err != nil && ctx.Err() == nil {
					o.e.log.Warn("engine: announce", "err", err)
				}
			case actx.Err() == nil:
				o.e.log.Warn("engine: could not take a partition; the next look tries again", "partition", k, "err", err)
			}
			done <- err
		})
	}
	o.mu.Unlock()
	// Each partition on its own: one that waits (a command in hand that
	// cannot be recorded, a consumer that does not answer) holds up no other.
	var g errgroup.Group
	for _, k := range drop {
		g.Go(func() error { o.release(ctx, k); return nil })
	}
	err = g.Wait()
	if wait {
		for _, done := range taken {
			err = errors.Join(err, <-done)
		}
	}
	if len(drop)+len(take) > 0 {
		o.e.log.Info("engine: partitions", "engines", len(ids), "taking", take, "let_go", drop, "pulls", o.partitions())
		err = errors.Join(err, o.announce(ctx))
	}
	return err
}

// handlingContext is the context partition k's commands are handled
// under; false when k is not being taken or held here.
func (o *owner) handlingContext(k int) (context.Context, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if p := o.handling[k]; p != nil {
		return p.handling, true
	}
	return nil, false
}

// partitions returns the partitions this engine pulls, in order.
func (o *owner) partitions() []int {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := make([]int, 0, len(o.owned))
	for k := range o.owned {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// acquire starts pulling partition k, after queueing the commands its
// previous owner took and did not finish. run is the engine's lifetime
// context, which the pull loops run under. If it fails, what it queued of
// k is handed back and k stays with no one here (the next look tries
// again).
func (o *owner) acquire(ctx, run context.Context, k int) error {
	e := o.e
	e.heads.dropWhere(func(ws string) bool { return events.Partition(ws, e.parts) == k })
	pctx, cancel := context.WithCancel(run)
	p := &partition{cancel: cancel, pulls: map[string]*jspull.Iter{}}
	p.handling, p.stopHandling = context.WithCancel(run)
	o.mu.Lock()
	o.handling[k] = p
	o.mu.Unlock()
	for _, src := range e.sources(k) {
		cons := e.consumers[src.durable+"/"+src.stream]
		msgs, last, err := e.unfinished(ctx, cons, src)
		if err == nil {
			// Before the pull starts: what it delivers above last was
			// stored after this take began.
			o.mu.Lock()
			o.taken[takenKey{k, src.stream}] = last
			pin := o.pinOf[takenKey{k, src.stream}]
			o.mu.Unlock()
			for _, m := range msgs {
				e.queue.pushRecovered(e.names.WorkspaceOf(m.Subject()), m)
			}
			var pulled *jspull.Iter
			// jspull, not cons.Messages: nats.go's pull reads a command
			// stored with no body and a Status header as the server's
			// status and ends (jspull's doc).
			pulled, err = jspull.Messages(e.js.Conn(), jspull.NextSubject(e.js, src.stream, src.durable),
				jspull.Options{Batch: e.pullBatch(), Group: PriorityGroup, Expiry: pullExpiry, PinID: pin})
			if err == nil {
				p.pulls[src.stream] = pulled
				w := e.newGapWatch(cons, src)
				w.pinned, w.sweeps = true, &p.pulled
				p.pulled.Go(func() { e.pull(pctx, pulled, w) })
				continue
			}
			err = fmt.Errorf("engine: pull partition %d from %s: %w", k, src.stream, err)
		}
		o.letGo(ctx, k, p)
		return err
	}
	o.mu.Lock()
	o.owned[k] = p
	n := len(o.owned)
	o.mu.Unlock()
	if m := e.cfg.Metrics; m != nil {
		m.Partitions.Set(float64(n))
		m.Takeovers.Inc()
	}
	return nil
}

// release lets go of partition k (letGo).
func (o *owner) release(ctx context.Context, k int) {
	o.mu.Lock()
	p := o.owned[k]
	delete(o.owned, k)
	n := len(o.owned)
	o.mu.Unlock()
	if m := o.e.cfg.Metrics; m != nil {
		m.Partitions.Set(float64(n))
	}
	if p != nil {
		o.letGo(ctx, k, p)
	}
}

// letGo stops pulling partition k (what its iterators hold already is
// queued, not dropped), hands back the commands queued and not started,
// oldest first (the next owner gets them first), waits for those being
// handled (at most AckWait), then drops the pin so the next owner need not
// wait for PinnedTTL.
func (o *owner) letGo(ctx context.Context, k int, p *partition) {
	e := o.e
	p.cancel()
	for _, it := range p.pulls {
		it.Drain()
	}
	drained := make(chan struct{})
	go func() { p.pulled.Wait(); close(drained) }()
	select {
	case <-drained:
	case <-time.After(5 * time.Second): // a drain that does not finish: give up on the buffer
		for _, it := range p.pulls {
			it.Stop()
		}
		<-drained
	}
	in := func(m jetstream.Msg) bool {
		part, ok := e.names.PartitionOf(m.Subject())
		return ok && part == k
	}
	for _, m := range e.queue.release(in) {
		_ = m.Nak()
	}
	// Wait for the commands in hand, but at most AckWait: one that cannot
	// be recorded retries (in progress) until it can, and rebalance waits
	// for this, so an unbounded wait would stop this engine taking any
	// partition again. Past it the partition's handling context ends, which
	// stops such a command here (handed back, not acked), and the partition
	// is unpinned: the next owner reads the command as unfinished and
	// handles it first, as a handled-before command whose event goes with
	// its outcome in one atomic batch (recover.go).
	bound := time.NewTimer(e.cfg.AckWait)
	defer bound.Stop()
	wait := time.NewTicker(5 * time.Millisecond)
	defer wait.Stop()
wait:
	for e.queue.handling(in) && ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case <-bound.C:
			e.log.Warn("engine: letting go of a partition with commands still in hand; the next owner handles them again",
				"partition", k, "waited", e.cfg.AckWait)
			break wait
		case <-wait.C:
		}
	}
	p.stopHandling()
	o.mu.Lock()
	if o.handling[k] == p {
		delete(o.handling, k)
	}
	o.mu.Unlock()
	o.unpin(k, p)
}

// unpin drops this engine's pins on partition k (held as p), so that
// another engine's pull is pinned at once; with a context of its own, as it
// runs when the engine's may have ended. Not where another engine is
// pinned (a pin id other than the one this engine's pull held): by the
// time a letGo gets here (it waits for the commands in hand up to
// AckWait, longer than PinnedTTL) the next owner may be pinned, and
// unpinning it would open the partition to any engine that still thinks
// it owns it. Where no one is pinned it still unpins: that makes the server
// drop the pull requests this engine left waiting, any of which would
// otherwise take the pin at the next command, gone with it for PinnedTTL.
// Not where this engine never pulled (a take cut short). Where the unpin
// fails the pin is kept (pinOf) for a take of k again.
func (o *owner) unpin(k int, p *partition) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, src := range o.e.sources(k) {
		it, pulled := p.pulls[src.stream]
		if !pulled {
			continue
		}
		// Read after the pull ended (letGo waited for it): the pin it
		// held, which it may have started with (pinOf) and not yet had a
		// delivery under.
		held := it.PinID()
		info, err := o.e.consumers[src.durable+"/"+src.stream].Info(ctx)
		if err == nil {
			pinned := ""
			if i := slices.IndexFunc(info.PriorityGroups, func(g jetstream.PriorityGroupState) bool { return g.Group == PriorityGroup }); i >= 0 {
				pinned = info.PriorityGroups[i].PinnedClientID
			}
			if pinned != "" && pinned != held {
				o.rememberPin(k, src.stream, "")
				continue // pinned to another engine since
			}
			// A narrow race is left: the pin may lapse between the two
			// requests and go to another engine, which this then unpins;
			// that engine is pinned again at its next pull.
			var st jetstream.Stream
			if st, err = o.e.js.Stream(ctx, src.stream); err == nil {
				err = st.UnpinConsumer(ctx, src.durable, PriorityGroup)
			}
		}
		if err != nil {
			// Kept: if this engine takes the partition again while the
			// pin lasts, its pull starts with it.
			o.rememberPin(k, src.stream, held)
			o.e.log.Info("engine: could not unpin; the next owner waits for the pinned TTL", "partition", k,
				"stream", src.stream, "err", err)
			continue
		}
		o.rememberPin(k, src.stream, "")
	}
}

// rememberPin keeps pin as the one partition k's next pull on stream
// starts with (pinOf); "" forgets it.
func (o *owner) rememberPin(k int, stream, pin string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if pin == "" {
		delete(o.pinOf, takenKey{k, stream})
		return
	}
	o.pinOf[takenKey{k, stream}] = pin
}

// unpinAll unpins the partitions of owned at once: each waits up to 5 s
// for NATS, and a stop must not wait that long per partition.
func (o *owner) unpinAll(owned map[int]*partition) {
	var wg sync.WaitGroup
	for k, p := range owned {
		wg.Go(func() { o.unpin(k, p) })
	}
	wg.Wait()
}

// removeEntry deletes this engine's member entry, so the others take its
// partitions at their next look; a failure is logged under what (they
// then take them after the member TTL).
func (o *owner) removeEntry(ctx context.Context, what string) {
	if err := o.st.Purge(ctx, jetstream.WithPurgeSubject("$KV."+o.kv.Bucket()+"."+o.id)); err != nil {
		o.e.log.Warn(what+": the others take this engine's partitions after the member TTL", "err", err)
	}
}

// leave removes this engine's entry (the others take its partitions at
// their next look, not after MemberTTL) and returns what it pulls.
func (o *owner) leave(ctx context.Context) map[int]*partition {
	o.removeEntry(ctx, "engine: leave")
	o.mu.Lock()
	defer o.mu.Unlock()
	owned := o.owned
	o.owned = map[int]*partition{}
	if m := o.e.cfg.Metrics; m != nil {
		m.Partitions.Set(0)
	}
	return owned
}

// retake takes partition k afresh after one of its pull loops ended by
// itself (Engine.pull, which calls it from that loop): k is let go of, its
// consumers made pullable again (a deleted one made again), and only then
// dropped from owned, so the next rebalance acquires it as any take does.
//
// Afresh rather than a new iterator in place, because a take is what keeps
// a workspace's order across the change: the consumer may be a new one,
// whose deliveries start again from the stream's first command with their
// counts at one. A take hands back what was queued and waits for what is
// in hand before anything is pulled again, reads what the consumer
// delivered and has not had acked first (recover.go), and marks every
// command stored so far as maybe handled before (takenThrough), so that
// such a delivery finds its outcome or event instead of being decided as
// new. In place, the new consumer's deliveries would queue beside the old
// one's, whose acks reach no one, and a command decided before would come
// back looking like a first delivery.
func (o *owner) retake(k int) {
	o.mu.Lock()
	// Still k's: letGo, which drops it, first waits for the loop calling.
	p := o.handling[k]
	o.mu.Unlock()
	if p == nil || !p.retaking.CompareAndSwap(false, true) {
		return // the other source's loop ended too: one retake
	}
	// Beside the loop, which letGo waits for. The workers' group: Close
	// and stopOwned wait for it after closing has ended, which ends this.
	o.e.wg.Go(func() { o.retaken(o.e.closing, k, p) })
}

// retakeSpacing is the least time between two retakes of one partition.
const retakeSpacing = 5 * time.Second

// retaken is retake's work, until ctx (closing) ends.
func (o *owner) retaken(ctx context.Context, k int, p *partition) {
	// An acquire still under way (the loop ended before the partition was
	// owned) finishes first: it sets owned and the partition's iterators.
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		o.mu.Lock()
		owned, held := o.owned[k] == p, o.handling[k] == p
		o.mu.Unlock()
		if owned {
			break
		}
		if !held {
			return // let go of meanwhile
		}
		select {
		case <-ctx.Done():
			return // stopping: Close lets it go
		case <-tick.C:
		}
	}
	o.letGo(ctx, k, p)
	// After letGo rather than at once: one made while the server still
	// removes the deleted one is lost (remakeConsumer checks).
	if o.e.remakeConsumers(ctx, k) != nil {
		return // stopping: Close lets it go (again: harmless)
	}
	// Taken afresh: the consumer may be a new one, which never held the
	// pin its letGo could not unpin.
	for _, src := range o.e.sources(k) {
		o.rememberPin(k, src.stream, "")
	}
	o.mu.Lock()
	last := o.retakenAt[k]
	o.mu.Unlock()
	if wait := retakeSpacing - time.Since(last); wait > 0 {
		// Taken afresh a moment ago and ended again: each take reads the
		// partition's unfinished commands, so not in a tight loop.
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return // stopping: Close lets it go
		case <-t.C:
		}
	}
	o.mu.Lock()
	if o.retakenAt == nil {
		o.retakenAt = map[int]time.Time{}
	}
	o.retakenAt[k] = time.Now()
	if o.owned[k] == p {
		delete(o.owned, k)
	}
	n := len(o.owned)
	o.mu.Unlock()
	if m := o.e.cfg.Metrics; m != nil {
		m.Partitions.Set(float64(n))
	}
	o.e.log.Info("engine: partition let go after its pull ended; the next look takes it again", "partition", k)
}
