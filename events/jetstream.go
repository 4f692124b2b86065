package events

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/internal/retry"
)

// StreamOptions configure the streams EnsureStreams creates.
type StreamOptions struct {
	// Replicas of each stream: 1, 3 or 5; 0 means 1. More than one needs
	// a NATS cluster of at least that many JetStream servers (ErrReplicas).
	Replicas int
	// DuplicateWindow is how long a command id is remembered for dedupe; 0
	// means 2 minutes (the server's default).
	DuplicateWindow time.Duration
	// CommandMaxAge bounds how long commands and system reports are kept
	// after they are handled; 0 means 7 days. It is lowered to
	// RejectedRetention when that is shorter, so that a command still in the
	// stream (which a redelivery or a restarted engine may read again)
	// always finds its outcome.
	CommandMaxAge time.Duration
	// RejectedRetention is how long an outcome that wrote no event
	// (rejected, no-op, stale) is kept: a per-message TTL (Nats-TTL), so a
	// flood of refused commands does not grow the event stream for ever.
	// 0 means DefaultRejectedRetention; negative keeps them for ever.
	// At least the duplicate window. Events and accepted outcomes are
	// kept for ever.
	RejectedRetention time.Duration
	// Memory keeps streams in memory (tests and benchmarks only).
	Memory bool
	// Partitions is P for new streams (partitions.go); 0 means the
	// existing streams' P, or DefaultPartitions for new ones. Streams made
	// with another P are refused (ErrPartitions).
	Partitions int
	// ReadyWait is how long EnsureStreams keeps trying while NATS is not
	// ready (NotReady); 0 means DefaultReadyWait.
	ReadyWait time.Duration
	// OnNotReady, when set, is told of each try that failed because NATS
	// was not ready, before the next (serve logs it).
	OnNotReady func(error)

	// afterPartitionsCheck, if set, runs when a start has found streams
	// made before partitions, before it claims their P (tests:
	// export_test.go).
	afterPartitionsCheck func()
}

// DefaultReadyWait is how long EnsureStreams tries by default: a cluster
// started together with its first serve elects its meta leader some
// seconds later, and a loaded one may leave a stream without quorum a
// while.
const DefaultReadyWait = time.Minute

// DefaultRejectedRetention is how long rejected, no-op and stale
// outcomes are kept by default: as long as commands are.
const DefaultRejectedRetention = 7 * 24 * time.Hour

// retentionKey is the event stream's metadata entry that tells every Store
// the TTL of outcomes that wrote no event (a Go duration; absent: none).
const retentionKey = "turnstile_rejected_retention"

// EnsureStreams creates the command, system report and event streams, or verifies and
// updates them if they exist. It fails if an existing stream cannot be
// brought to the expected configuration. While NATS is not ready (a
// cluster electing its leaders: NotReady) it tries again, with backoff,
// for up to o.ReadyWait; each try has apiAttempt, so a request lost as
// the meta leader steps down costs that try, not the whole wait. A try
// that did part of the work is safe to run again: it ends in the same
// streams.
func EnsureStreams(ctx context.Context, js jetstream.JetStream, n Names, o StreamOptions) error {
	wait := cmp.Or(o.ReadyWait, DefaultReadyWait)
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	err := untilReady(wctx, apiAttempt, noRespondersFor, func(ctx context.Context) error { return ensureStreams(ctx, js, n, o) }, o.OnNotReady)
	if err != nil && wctx.Err() != nil && ctx.Err() == nil {
		return fmt.Errorf("NATS was not ready within %v: %w", wait, err)
	}
	return err
}

// ensureStreams is one try of EnsureStreams.
func ensureStreams(ctx context.Context, js jetstream.JetStream, n Names, o StreamOptions) error {
	if o.Replicas == 0 {
		o.Replicas = 1
	}
	if err := ValidateReplicas(o.Replicas); err != nil {
		return fmt.Errorf("ensure streams: %w", err)
	}
	if o.DuplicateWindow == 0 {
		o.DuplicateWindow = 2 * time.Minute
	}
	if o.CommandMaxAge == 0 {
		o.CommandMaxAge = 7 * 24 * time.Hour
	}
	if o.RejectedRetention == 0 {
		o.RejectedRetention = DefaultRejectedRetention
	}
	var meta map[string]string
	if o.RejectedRetention > 0 {
		if o.RejectedRetention < o.DuplicateWindow || o.RejectedRetention < time.Second {
			return fmt.Errorf("ensure streams: rejected outcome retention %v is shorter than the duplicate window %v (and 1s)",
				o.RejectedRetention, o.DuplicateWindow)
		}
		o.CommandMaxAge = min(o.CommandMaxAge, o.RejectedRetention)
		meta = map[string]string{retentionKey: o.RejectedRetention.String()}
	}
	parts, fresh, legacy, err := ensurePartitions(ctx, js, n, o.Partitions, o.afterPartitionsCheck)
	if err != nil {
		return err
	}
	storage := jetstream.FileStorage
	if o.Memory {
		storage = jetstream.MemoryStorage
	}
	cfgs := []jetstream.StreamConfig{{
		Name:        n.CommandStream(),
		Description: "Turnstile commands: published on cmd.<workspace>, stored as cmd.<partition>.<workspace>",
		// One token after cmd.: a subject that names a partition itself is
		// not taken (no stream answers it), so no one can choose one.
		Subjects:         []string{n.Prefix + ".cmd.*"},
		SubjectTransform: partitionTransform(n.Prefix, "cmd", parts),
		Metadata:         map[string]string{partitionsKey: strconv.Itoa(parts)},
		Retention:        jetstream.LimitsPolicy,
		MaxAge:           o.CommandMaxAge,
		Duplicates:       o.DuplicateWindow,
		Storage:          storage,
		Replicas:         o.Replicas,
		AllowDirect:      true,
	}, {
		// Only serve's own parts may publish here (NATS permissions); the
		// engine trusts system command types from this stream alone.
		Name:             n.SystemStream(),
		Description:      "Turnstile system reports (provisioner, supervisor, watcher): published on sys.<workspace>, stored as sys.<partition>.<workspace>",
		Subjects:         []string{n.Prefix + ".sys.*"},
		SubjectTransform: partitionTransform(n.Prefix, "sys", parts),
		Metadata:         map[string]string{partitionsKey: strconv.Itoa(parts)},
		Retention:        jetstream.LimitsPolicy,
		MaxAge:           o.CommandMaxAge,
		Duplicates:       o.DuplicateWindow,
		Storage:          storage,
		Replicas:         o.Replicas,
		AllowDirect:      true,
	}, {
		Name:        n.EventStream(),
		Description: "Turnstile events (evt.<workspace>) and command outcomes (out.<command id>)",
		Subjects:    []string{n.Events(), n.Outcomes()},
		Retention:   jetstream.LimitsPolicy,
		Duplicates:  o.DuplicateWindow,
		Storage:     storage,
		Replicas:    o.Replicas,
		AllowDirect: true,
		// Events and outcomes of many commands are committed together.
		AllowAtomicPublish: true,
		// Outcomes that wrote no event expire (RejectedRetention). Once
		// on, the server does not let it be turned off again.
		AllowMsgTTL: true,
		Metadata:    meta,
	}}
	for i, cfg := range cfgs {
		if i == 0 && fresh {
			// Created, not updated: two first starts with different P must
			// not both stand. The one that finds the stream made meanwhile
			// starts over and takes (or refuses) its P.
			_, err := js.CreateStream(ctx, cfg)
			if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
				return ensureStreams(ctx, js, n, o)
			}
			if err != nil {
				return fmt.Errorf("ensure stream %s: %w", cfg.Name, replicasError(err, o.Replicas))
			}
			continue
		}
		if _, err := js.CreateOrUpdateStream(ctx, cfg); err != nil {
			return fmt.Errorf("ensure stream %s: %w", cfg.Name, replicasError(err, o.Replicas))
		}
	}
	if legacy {
		return checkTakeover(ctx, js, n, parts)
	}
	return nil
}

// apiAttempt is how long one try of EnsureStreams may take before it is
// made again. On a cluster only the meta leader answers stream creates and
// updates, and a request that arrives while it steps down or is being
// elected (a node lost, or a starved host) is never answered: without a
// bound of its own it would hold the caller's whole wait for one lost
// message.
const apiAttempt = 10 * time.Second

// UntilReady runs f, with apiAttempt for each try, again while it fails
// the way servers that are not ready answer (NotReady; a try out of time
// is one), with backoff, until ctx ends: the caller bounds the wait.
// onNotReady, when set, hears of each such failure. f must be safe to run
// again after a try that failed part way.
func UntilReady(ctx context.Context, f func(context.Context) error, onNotReady func(error)) error {
	return untilReady(ctx, apiAttempt, noRespondersFor, f, onNotReady)
}

// untilReady is UntilReady with per for each try, taking no responders
// for not ready for noResponders.
func untilReady(ctx context.Context, per, noResponders time.Duration, f func(context.Context) error, onNotReady func(error)) error {
	start := time.Now()
	for attempt := 0; ; attempt++ {
		tctx, cancel := context.WithTimeout(ctx, per)
		err := f(tctx)
		cancel()
		if err == nil || ctx.Err() != nil || !NotReady(err) {
			return err
		}
		if errors.Is(err, nats.ErrNoResponders) && time.Since(start) >= noResponders {
			return fmt.Errorf("no server answered the JetStream API for %v: is JetStream enabled on the NATS server? %w", noResponders, err)
		}
		if onNotReady != nil {
			onNotReady(err)
		}
		if berr := retry.Sleep(ctx, retry.Backoff(attempt, 100*time.Millisecond, 2*time.Second)); berr != nil {
			return err
		}
	}
}

// noRespondersFor is how long UntilReady takes "no responders" for a
// server still starting: a server without JetStream answers nothing else,
// and waiting does not mend that.
const noRespondersFor = 10 * time.Second

// NotReady reports an error servers answer while they cannot serve a
// JetStream API request yet, and that waiting mends: "JetStream system
// temporarily unavailable", a leader stepping down, a listing with a peer
// missing; no responders (UntilReady bounds that one); a request that
// timed out or went unanswered. Any other API error is an answer to keep
// ("JetStream not enabled", insufficient resources, no peers for the
// replicas, ...).
func NotReady(err error) bool {
	var api *jetstream.APIError
	if errors.As(err, &api) {
		switch api.ErrorCode {
		case jsErrCodeClusterNotAvailable, jsErrCodeClusterNotLeader, jsErrCodeIncompleteResults, jsErrCodeLastPerSubjectNotReady:
			return true
		case jsErrCodeClusterNoPeers:
			// A peer the placement needs is offline (restarting, or not yet
			// seen by a cluster just formed): it comes back. Too few
			// servers for the replicas gives no such reason, and stays an
			// answer.
			return strings.Contains(api.Description, "peer offline")
		}
		return false
	}
	// Past an API error, IsRetryable's list is the same: no twin of it.
	return errors.Is(err, context.DeadlineExceeded) || IsRetryable(err)
}

// Head is a workspace's current state and where it stands in the stream.
type Head struct {
	State fsm.Workspace
	// StreamSeq is the stream sequence of the newest message on the
	// workspace's subject, 0 if none: the expected last subject sequence of
	// the next append. It is the newest event's but when the newest
	// message is unreadable (see Unreadable).
	StreamSeq uint64
	// Last is the newest readable event, nil if none: the workspace does
	// not exist.
	Last *Envelope
}

// Store is the event store on JetStream. It is safe for concurrent use.
type Store struct {
	js     jetstream.JetStream
	names  Names
	codec  Codec
	stream jetstream.Stream
	// rejectedTTL is the TTL of outcomes that wrote no event; 0: none.
	rejectedTTL time.Duration
	// replicasRead is when the stream's configuration was last read
	// (unix nanoseconds): replicatedLately.
	replicasRead atomic.Int64
}

// OpenStore binds to the event stream, which EnsureStreams must have created.
// It takes the retention of outcomes that wrote no event from the
// stream's configuration, so every process writes them alike.
func OpenStore(ctx context.Context, js jetstream.JetStream, n Names, c Codec) (*Store, error) {
	st, err := js.Stream(ctx, n.EventStream())
	if err != nil {
		return nil, fmt.Errorf("open event stream %s: %w", n.EventStream(), err)
	}
	s := &Store{js: js, names: n, codec: c, stream: st}
	s.replicasRead.Store(time.Now().UnixNano())
	if cfg := st.CachedInfo().Config; cfg.AllowMsgTTL {
		if v, ok := cfg.Metadata[retentionKey]; ok {
			d, err := time.ParseDuration(v)
			if err != nil || d < time.Second {
				return nil, fmt.Errorf("open event stream %s: metadata %s=%q: want a duration of at least 1s", n.EventStream(), retentionKey, v)
			}
			s.rejectedTTL = d
		}
	}
	return s, nil
}

// RejectedRetention is how long outcomes that wrote no event are kept; 0
// means for ever.
func (s *Store) RejectedRetention() time.Duration { return s.rejectedTTL }

// DuplicateWindow is how long the event stream remembers a message id,
// as configured when the store was opened: an event stored within it is
// refused as a duplicate when its command is written again.
func (s *Store) DuplicateWindow() time.Duration { return s.stream.CachedInfo().Config.Duplicates }

// ReadDuplicateWindows reads the command and event streams' duplicate
// windows now (an operator may have changed either since the store was
// opened) and returns the shorter.
func (s *Store) ReadDuplicateWindows(ctx context.Context) (time.Duration, error) {
	info, err := s.stream.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("event stream info: %w", err)
	}
	cmds, err := s.js.Stream(ctx, s.names.CommandStream())
	if err != nil {
		return 0, fmt.Errorf("command stream info: %w", err)
	}
	return min(info.Config.Duplicates, cmds.CachedInfo().Config.Duplicates), nil
}

// Names returns the subjects and streams the store uses.
func (s *Store) Names() Names { return s.names }

// Codec returns the store's codec.
func (s *Store) Codec() Codec { return s.codec }

// Load returns a workspace's current state: one get-last-message call,
// whatever the length of its history.
func (s *Store) Load(ctx context.Context, id string) (Head, error) {
	if err := fsm.ValidateID(id); err != nil {
		return Head{}, err
	}
	msg, err := s.stream.GetLastMsgForSubject(ctx, s.names.Event(id))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return Head{State: fsm.Workspace{ID: id}}, nil
	}
	if err != nil {
		return Head{}, fmt.Errorf("load workspace %s: %w", id, err)
	}
	env, err := s.DecodeEvent(msg.Subject, msg.Data)
	if err != nil {
		// An unreadable newest message must not wedge the workspace: the
		// state is the newest readable envelope's, and the next append
		// still goes after the unreadable message (the CAS names it).
		return s.loadBefore(ctx, id, msg.Sequence)
	}
	env.StreamSeq = msg.Sequence
	return Head{State: env.State, StreamSeq: msg.Sequence, Last: &env}, nil
}

// LoadBefore returns workspace id as it was before stream sequence seq:
// the newest readable envelope on its subject before seq (no workspace if
// there is none). Head.StreamSeq is that envelope's.
func (s *Store) LoadBefore(ctx context.Context, id string, seq uint64) (Head, error) {
	if err := fsm.ValidateID(id); err != nil {
		return Head{}, err
	}
	h, err := s.loadBefore(ctx, id, seq)
	if err != nil {
		return Head{}, err
	}
	h.StreamSeq = 0
	if h.Last != nil {
		h.StreamSeq = h.Last.StreamSeq
	}
	return h, nil
}

// loadBefore is Load when the newest message of workspace id, at stream
// sequence last, is unreadable: the newest readable envelope before it is
// the state. It steps back one message at a time (a get-last-message up to
// a sequence), and past a run of maxStepsBack unreadable messages reads
// the workspace's history once instead. The engine's next event makes Load
// one get-last-message call again.
func (s *Store) loadBefore(ctx context.Context, id string, last uint64) (Head, error) {
	h := Head{State: fsm.Workspace{ID: id}, StreamSeq: last}
	subject := s.names.Event(id)
	for before, step := last, 0; step < maxStepsBack; step++ {
		var m *jetstream.RawStreamMsg
		err := s.directBatch(ctx, s.names.EventStream(), batchRequest{MultiLastFor: []string{subject}, UpToSeq: before - 1},
			func(msg *jetstream.RawStreamMsg) error {
				m = msg
				return nil
			})
		if err != nil {
			return Head{}, fmt.Errorf("load workspace %s before stream sequence %d: %w", id, before, err)
		}
		if m == nil || m.Sequence >= before {
			return h, nil // nothing readable before: no workspace
		}
		if env, err := s.DecodeEvent(m.Subject, m.Data); err == nil {
			env.StreamSeq = m.Sequence
			h.State, h.Last = env.State, &env
			return h, nil
		}
		before = m.Sequence
	}
	err := s.scan(ctx, id, last, func(r Record) error {
		if r.Event != nil {
			h.State, h.Last = r.Event.State, r.Event
		}
		return nil
	})
	if err != nil {
		return Head{}, fmt.Errorf("load workspace %s: %w", id, err)
	}
	return h, nil
}

// Outcome returns a command's stored outcome; ok is false if there is none yet.
func (s *Store) Outcome(ctx context.Context, commandID string) (o OutcomeRecord, ok bool, err error) {
	if err := fsm.ValidateCommandID(commandID); err != nil {
		return o, false, err
	}
	msg, err := s.stream.GetLastMsgForSubject(ctx, s.names.Outcome(commandID))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return o, false, nil
	}
	if err != nil {
		return o, false, fmt.Errorf("get outcome of %s: %w", commandID, err)
	}
	o, err = DecodeOutcome(msg.Data)
	return o, err == nil, err
}

// History calls fn for each event of workspace id, oldest first, up to the
// newest event at the time of the call. Unreadable messages on the
// workspace's subject are skipped (HistoryRecords reports them).
func (s *Store) History(ctx context.Context, id string, fn func(Envelope) error) error {
	return s.HistoryRecords(ctx, id, func(r Record) error {
		if r.Event == nil {
			return nil
		}
		return fn(*r.Event)
	})
}

// HistoryRecords calls fn for each message on workspace id's subject,
// oldest first, up to the newest at the time of the call: a Record with
// Event set, or with Unreadable set for a message no reader can use.
func (s *Store) HistoryRecords(ctx context.Context, id string, fn func(Record) error) error {
	if err := fsm.ValidateID(id); err != nil {
		return err
	}
	msg, err := s.stream.GetLastMsgForSubject(ctx, s.names.Event(id))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("history of %s: %w", id, err)
	}
	return s.scan(ctx, id, msg.Sequence, fn)
}

// scan calls fn for each message on workspace id's subject up to stream
// sequence through, which must hold one.
func (s *Store) scan(ctx context.Context, id string, through uint64, fn func(Record) error) error {
	return s.scanFrom(ctx, id, 1, through, func() int { return historyPage }, fn)
}

// scanFrom is scan from stream sequence from on, each request asking for
// size() messages.
func (s *Store) scanFrom(ctx context.Context, id string, from, through uint64, size func() int, fn func(Record) error) error {
	got, err := s.readSized(ctx, from, through, s.names.Event(id), size, fn)
	if err != nil {
		return fmt.Errorf("history of %s: %w", id, err)
	}
	if got < through {
		// The head said messages up to through exist: none left before
		// it means they were removed under us.
		return fmt.Errorf("history of %s: no event at or after stream sequence %d, though the newest is %d", id, got+1, through)
	}
	return nil
}

// maxStepsBack bounds how many unreadable messages loadBefore steps over
// one by one before it reads the history instead.
const maxStepsBack = 16

// historyPage is how many events one direct batch get of a history asks
// for at most.
const historyPage = 512

// Record is one message of the event stream: an event, an outcome, or a
// message no reader can use.
type Record struct {
	StreamSeq uint64
	Time      time.Time
	Event     *Envelope      // set for events
	Outcome   *OutcomeRecord // set for outcomes
	// Unreadable is set, and Event and Outcome are nil, for a message that
	// does not decode or does not belong to its subject. Readers skip it.
	Unreadable *Unreadable
}

// LastSeq returns the event stream's last sequence.
func (s *Store) LastSeq(ctx context.Context) (uint64, error) {
	info, err := s.stream.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("event stream info: %w", err)
	}
	return info.State.LastSeq, nil
}

// Replay calls fn for every record of the event stream from stream sequence
// from up to and including to (0: the last sequence at the time of the call).
func (s *Store) Replay(ctx context.Context, from, to uint64, fn func(Record) error) error {
	if to == 0 {
		last, err := s.LastSeq(ctx)
		if err != nil {
			return err
		}
		to = last
	}
	if from == 0 {
		from = 1
	}
	if to < from {
		return nil
	}
	if _, err := s.read(ctx, from, to, "", replayPage, fn); err != nil {
		return fmt.Errorf("replay: %w", err)
	}
	return nil
}

// errEnough stops a read once it has what it wants.
var errEnough = errors.New("enough")

// Events calls fn for up to n messages on the event subjects (events
// only, no outcomes), from stream sequence from on, stored at the time of
// the call, in stream order; unreadable ones come as Record.Unreadable.
func (s *Store) Events(ctx context.Context, from uint64, n int, fn func(Record) error) error {
	if n <= 0 {
		return nil
	}
	seen := 0
	_, err := s.read(ctx, max(from, 1), math.MaxUint64, s.names.Events(), n, func(r Record) error {
		if err := fn(r); err != nil {
			return err
		}
		if seen++; seen == n {
			return errEnough
		}
		return nil
	})
	if errors.Is(err, errEnough) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("events from stream sequence %d: %w", from, err)
	}
	return nil
}

// decodeRecord decodes a message read at stream sequence seq, stored at
// stored. One that cannot be used comes back as Record.Unreadable, never
// as an error: a reader that stopped at it would stall on it for ever.
func (s *Store) decodeRecord(subject string, data []byte, seq uint64, stored time.Time) Record {
	r := Record{StreamSeq: seq}
	var err error
	if s.names.IsEvent(subject) {
		var env Envelope
		if env, err = s.DecodeEvent(subject, data); err == nil {
			env.StreamSeq = seq
			r.Event, r.Time = &env, env.Time
			return r
		}
	} else {
		var o OutcomeRecord
		if o, err = s.names.DecodeOutcomeOn(subject, data); err == nil {
			r.Outcome, r.Time = &o, o.DecidedAt
			return r
		}
	}
	r.Time = stored
	r.Unreadable = &Unreadable{StreamSeq: seq, Subject: subject, Time: stored, Data: data, Err: err}
	return r
}

// replayPage is how many messages one direct batch get of a replay asks for.
const replayPage = 1000

// read calls fn for each message of the event stream (on subject, if
// not empty) from stream sequence from up to and including to, page
// messages per request, and returns the sequence read through: to, or
// less when no message is left before it (removed: expired outcomes, or
// the stream purged). It reads with direct batch gets, not a consumer: a
// read is a request like any other, a consumer per read would let many
// readers exhaust the server's consumers (the API fuzzer did), and a NATS
// user may read but not create consumers (a consumer's deliver subject
// could point anywhere, docs/security.md); the CLI's audit --all runs as
// that user.
func (s *Store) read(ctx context.Context, from, to uint64, subject string, page int, fn func(Record) error) (uint64, error) {
	return s.readSized(ctx, from, to, subject, func() int { return page }, fn)
}

// readSized is read with each request asking for size() messages (at
// least 1), asked again before each request.
func (s *Store) readSized(ctx context.Context, from, to uint64, subject string, size func() int, fn func(Record) error) (uint64, error) {
	through := from - 1
	for through < to {
		req := batchRequest{Seq: through + 1, NextFor: subject, Batch: int(min(uint64(max(size(), 1)), to-through))}
		got, past := 0, false
		var fnErr error
		err := s.directBatch(ctx, s.names.EventStream(), req, func(m *jetstream.RawStreamMsg) error {
			if m.Sequence > to {
				past = true
				return errBatchDone
			}
			if fnErr = fn(s.decodeRecord(m.Subject, m.Data, m.Sequence, m.Time)); fnErr != nil {
				return fnErr
			}
			through = m.Sequence
			got++
			return nil
		})
		switch {
		case fnErr != nil:
			return through, fnErr
		case err != nil:
			return through, fmt.Errorf("read from stream sequence %d: %w", through+1, err)
		case past:
			return to, nil
		case got == 0:
			return through, nil
		}
	}
	return through, nil
}

// IsWrongLastSequence reports the server's "wrong last sequence" refusal of
// a conditional append, on single-replica and replicated streams alike.
func IsWrongLastSequence(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		return apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
			apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant
	}
	return false
}

// IsRetryable reports errors after which the same publish may be retried:
// timeouts, no responders during a restart or leader change, and the
// server's "temporarily unavailable" (10163).
func IsRetryable(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		return apiErr.ErrorCode == jsErrCodeLastPerSubjectNotReady || apiErr.Code == 503
	}
	return errors.Is(err, nats.ErrTimeout) || errors.Is(err, jetstream.ErrNoStreamResponse) ||
		errors.Is(err, nats.ErrNoResponders) || errors.Is(err, nats.ErrConnectionReconnecting)
}

// IsUnavailable reports errors that say NATS could not be reached or did
// not answer: the connection closed, reconnecting or draining, no servers,
// no responders, a timeout, a stream that did not respond or a server
// shutting down. A retry may get past them.
func IsUnavailable(err error) bool {
	for _, target := range []error{
		nats.ErrConnectionClosed, nats.ErrConnectionReconnecting, nats.ErrConnectionDraining,
		nats.ErrDisconnected, nats.ErrNoServers, nats.ErrNoResponders, nats.ErrTimeout,
		jetstream.ErrNoStreamResponse, jetstream.ErrServerShutdown,
	} {
		if errors.Is(err, target) {
			return true
		}
	}
	return false
}

func backoff(ctx context.Context, attempt int) error {
	return retry.Sleep(ctx, retry.Backoff(attempt, 10*time.Millisecond, 640*time.Millisecond))
}

// Subscribe calls fn for every record of the event stream from stream
// sequence from on, including those appended later, until ctx ends or fn
// fails. Records arrive in stream order; a message that cannot be used
// comes as a Record with Unreadable set.
func (s *Store) Subscribe(ctx context.Context, from uint64, fn func(Record) error) error {
	return s.subscribe(ctx, []string{s.names.Events(), s.names.Outcomes()}, from, 1024, fn)
}

// SubscribeEvents is Subscribe for events alone: of workspace id, or of
// every workspace when id is empty.
func (s *Store) SubscribeEvents(ctx context.Context, id string, from uint64, fn func(Record) error) error {
	subject := s.names.Events()
	if id != "" {
		if err := fsm.ValidateID(id); err != nil {
			return err
		}
		subject = s.names.Event(id)
	}
	return s.subscribe(ctx, []string{subject}, from, 256, fn)
}

// subscribe reads subjects through an ordered consumer: no acks, gone
// when the read ends (or, should this process die, once idle).
func (s *Store) subscribe(ctx context.Context, subjects []string, from uint64, pull int, fn func(Record) error) error {
	cons, err := s.stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects: subjects,
		DeliverPolicy:  jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:    max(from, 1),
	})
	if err != nil {
		return fmt.Errorf("subscribe: %w", err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(pull))
	if err != nil {
		return fmt.Errorf("subscribe: %w", err)
	}
	defer it.Stop()
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	for {
		m, err := it.Next()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("subscribe: %w", err)
		}
		md, err := m.Metadata()
		if err != nil {
			return fmt.Errorf("subscribe: %w", err)
		}
		if err := fn(s.decodeRecord(m.Subject(), m.Data(), md.Sequence.Stream, md.Timestamp)); err != nil {
			return err
		}
	}
}

// FirstEventSeq returns the stream sequence of workspace id's first event;
// ok is false when it has none.
func (s *Store) FirstEventSeq(ctx context.Context, id string) (seq uint64, ok bool, err error) {
	if err := fsm.ValidateID(id); err != nil {
		return 0, false, err
	}
	last, err := s.LastSeq(ctx)
	if err != nil || last == 0 {
		return 0, false, err
	}
	errFound := errors.New("found")
	_, err = s.read(ctx, 1, last, s.names.Event(id), 1, func(r Record) error {
		seq, ok = r.StreamSeq, true
		return errFound
	})
	if err != nil && !errors.Is(err, errFound) {
		return 0, false, fmt.Errorf("first event of %s: %w", id, err)
	}
	return seq, ok, nil
}

// Outcomes calls fn for every outcome record (of every workspace) from
// stream sequence from on: up to the last one stored at the time of the
// call, or, with follow, including those stored later until ctx ends or fn
// fails. A message that cannot be used comes as a Record with Unreadable
// set.
func (s *Store) Outcomes(ctx context.Context, from uint64, follow bool, fn func(Record) error) error {
	if follow {
		return s.subscribe(ctx, []string{s.names.Outcomes()}, from, 256, fn)
	}
	last, err := s.LastSeq(ctx)
	if err != nil {
		return err
	}
	if from = max(from, 1); from > last {
		return nil
	}
	_, err = s.read(ctx, from, last, s.names.Outcomes(), replayPage, fn)
	return err
}

// firstSince returns the stream sequence of the first message on subject
// stored at or after since, 0 if there is none: one direct get by time.
func (s *Store) firstSince(ctx context.Context, subject string, since time.Time) (uint64, error) {
	m, err := s.directGet(ctx, struct {
		StartTime time.Time `json:"start_time"`
		NextFor   string    `json:"next_by_subj"`
	}{since.UTC(), subject})
	if err != nil || m == nil {
		return 0, err
	}
	return m.Sequence, nil
}

// directGet sends one direct get request (req, JSON-encoded) for the event
// stream, on the connection's shared request inbox (directBatch subscribes
// an inbox of its own per call, for many messages), and returns the
// message; nil when there is none.
func (s *Store) directGet(ctx context.Context, req any) (*jetstream.RawStreamMsg, error) {
	b, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	ctx, cancel := s.bounded(ctx)
	defer cancel()
	m, err := s.js.Conn().RequestWithContext(ctx, s.apiSubject("DIRECT.GET."+s.names.EventStream()), b)
	if err != nil {
		return nil, err
	}
	if len(m.Data) == 0 && m.Header.Get("Status") == "404" {
		return nil, nil
	}
	if st := m.Header.Get("Status"); st != "" {
		return nil, fmt.Errorf("direct get: %s %s", st, m.Header.Get("Description"))
	}
	seq, err := strconv.ParseUint(m.Header.Get(jetstream.SequenceHeader), 10, 64)
	if err != nil {
		return nil, fmt.Errorf("direct get: sequence header %q: %w", m.Header.Get(jetstream.SequenceHeader), err)
	}
	return &jetstream.RawStreamMsg{Subject: m.Header.Get(jetstream.SubjectHeader), Sequence: seq, Data: m.Data}, nil
}

// apiSubject is the JetStream API subject of api (e.g. "DIRECT.GET.<stream>")
// under the JetStream context's prefix or domain.
func (s *Store) apiSubject(api string) string {
	o := s.js.Options()
	switch {
	case o.APIPrefix != "":
		return strings.TrimSuffix(o.APIPrefix, ".") + "." + api
	case o.Domain != "":
		return "$JS." + o.Domain + ".API." + api
	}
	return jetstream.DefaultAPIPrefix + api
}

// FindEvent returns the event that command commandID recorded on
// workspace id, looking among the workspace's events stored at or after
// since; ok is false when there is none. It is how a command handled again
// finds the event an earlier handling stored without its outcome (a crash
// between the two writes) after the workspace moved on past it.
//
// It reads with direct gets, which a replica lagging behind the stream
// leader may answer; on a replicated stream, where they did not find the
// event, the leader is asked for the rest, one message get per event of
// the workspace the replica lacks: a "none" here lets the command be
// decided a second time.
func (s *Store) FindEvent(ctx context.Context, id, commandID string, since time.Time) (env Envelope, ok bool, err error) {
	if err := fsm.ValidateID(id); err != nil {
		return Envelope{}, false, err
	}
	subject := s.names.Event(id)
	errFound := errors.New("found")
	match := func(r Record) error {
		if r.Event != nil && r.Event.CommandID == commandID {
			env, ok = *r.Event, true
			return errFound
		}
		return nil
	}
	// The first of the workspace's events at or after since: one direct
	// get by time, then reads by sequence.
	from, err := s.firstSince(ctx, subject, since)
	if err != nil {
		return Envelope{}, false, fmt.Errorf("find the event of command %s: %w", commandID, err)
	}
	var through uint64
	if from != 0 {
		last, err := s.LastSeq(ctx)
		if err != nil {
			return Envelope{}, false, err
		}
		through, err = s.read(ctx, from, last, subject, replayPage, match)
		if errors.Is(err, errFound) {
			return env, true, nil
		}
		if err != nil {
			return Envelope{}, false, fmt.Errorf("find the event of command %s: %w", commandID, err)
		}
		if through >= last {
			return Envelope{}, false, nil // read to the leader's last: nothing is left
		}
	}
	if !s.replicatedLately(ctx) {
		return Envelope{}, false, nil
	}
	req := leaderRequest{Seq: through + 1, NextFor: subject}
	if from == 0 {
		t := since.UTC()
		req = leaderRequest{StartTime: &t, NextFor: subject}
	}
	for {
		m, err := s.leaderGet(ctx, req)
		if err != nil {
			return Envelope{}, false, fmt.Errorf("find the event of command %s: %w", commandID, err)
		}
		if m == nil {
			return Envelope{}, false, nil
		}
		if match(s.decodeRecord(m.Subject, m.Data, m.Sequence, m.Time)) != nil {
			return env, true, nil
		}
		req = leaderRequest{Seq: m.Sequence + 1, NextFor: subject}
	}
}
