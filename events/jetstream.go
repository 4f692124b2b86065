package events

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/synadia-io/orbit.go/jetstreamext"

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
}

// DefaultRejectedRetention is how long rejected, no-op and stale
// outcomes are kept by default: as long as commands are.
const DefaultRejectedRetention = 7 * 24 * time.Hour

// retentionKey is the event stream's metadata entry that tells every Store
// the TTL of outcomes that wrote no event (a Go duration; absent: none).
const retentionKey = "turnstile_rejected_retention"

// EnsureStreams creates the command, system report and event streams, or verifies and
// updates them if they exist. It fails if an existing stream cannot be
// brought to the expected configuration.
func EnsureStreams(ctx context.Context, js jetstream.JetStream, n Names, o StreamOptions) error {
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
	storage := jetstream.FileStorage
	if o.Memory {
		storage = jetstream.MemoryStorage
	}
	cfgs := []jetstream.StreamConfig{{
		Name:        n.CommandStream(),
		Description: "Turnstile commands, one subject per workspace",
		Subjects:    []string{n.Commands()},
		Retention:   jetstream.LimitsPolicy,
		MaxAge:      o.CommandMaxAge,
		Duplicates:  o.DuplicateWindow,
		Storage:     storage,
		Replicas:    o.Replicas,
		AllowDirect: true,
	}, {
		// Only serve's own parts may publish here (NATS permissions); the
		// engine trusts system command types from this stream alone.
		Name:        n.SystemStream(),
		Description: "Turnstile system reports (provisioner, supervisor, watcher), one subject per workspace",
		Subjects:    []string{n.Systems()},
		Retention:   jetstream.LimitsPolicy,
		MaxAge:      o.CommandMaxAge,
		Duplicates:  o.DuplicateWindow,
		Storage:     storage,
		Replicas:    o.Replicas,
		AllowDirect: true,
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
	for _, cfg := range cfgs {
		if _, err := js.CreateOrUpdateStream(ctx, cfg); err != nil {
			return fmt.Errorf("ensure stream %s: %w", cfg.Name, replicasError(err, o.Replicas))
		}
	}
	return nil
}

// ErrConflict means another writer appended to the workspace since it was
// loaded: reload and decide again.
var ErrConflict = errors.New("append conflict: the workspace changed since it was loaded")

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

// Names returns the subjects and streams the store uses.
func (s *Store) Names() Names { return s.names }

// Codec returns the store's codec.
func (s *Store) Codec() Codec { return s.codec }

// JetStream returns the JetStream context the store writes through.
func (s *Store) JetStream() jetstream.JetStream { return s.js }

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
		msgs, err := jetstreamext.GetLastMsgsFor(ctx, s.js, s.names.EventStream(), []string{subject},
			jetstreamext.GetLastMsgsUpToSeq(before-1))
		if err != nil {
			return Head{}, fmt.Errorf("load workspace %s before stream sequence %d: %w", id, before, err)
		}
		var m *jetstream.RawStreamMsg
		for msg, err := range msgs {
			if errors.Is(err, jetstreamext.ErrNoMessages) {
				break
			}
			if err != nil {
				return Head{}, fmt.Errorf("load workspace %s before stream sequence %d: %w", id, before, err)
			}
			m = msg
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

// AppendResult says where an append landed.
type AppendResult struct {
	StreamSeq uint64
	// Duplicate is true when the command's event was already stored (a
	// redelivery or a retry after a timeout); StreamSeq is then the original.
	Duplicate bool
}

// EventMsg builds the message that appends env after expected.
func (s *Store) EventMsg(env Envelope) (*nats.Msg, error) {
	data, err := s.codec.Encode(env)
	if err != nil {
		return nil, err
	}
	m := nats.NewMsg(s.names.Event(env.Workspace))
	m.Data = data
	m.Header.Set(jetstream.MsgIDHeader, env.CommandID)
	return m, nil
}

// Append stores env if the workspace's newest event is still at expected
// (0: the workspace has no events). It returns ErrConflict when another
// writer got there first. A retry of an append that did land (same command
// id) reports Duplicate instead of a conflict.
func (s *Store) Append(ctx context.Context, env Envelope, expected uint64) (AppendResult, error) {
	m, err := s.EventMsg(env)
	if err != nil {
		return AppendResult{}, err
	}
	for attempt := 0; ; attempt++ {
		ack, err := s.js.PublishMsg(ctx, m, jetstream.WithExpectLastSequencePerSubject(expected))
		if err == nil {
			return AppendResult{StreamSeq: ack.Sequence, Duplicate: ack.Duplicate}, nil
		}
		if IsWrongLastSequence(err) {
			return s.ResolveConflict(ctx, env)
		}
		if !IsRetryable(err) || attempt >= 8 || ctx.Err() != nil {
			return AppendResult{}, fmt.Errorf("append %s to %s: %w", env.Type, env.Workspace, err)
		}
		if err := backoff(ctx, attempt); err != nil {
			return AppendResult{}, err
		}
	}
}

// ResolveConflict handles "wrong last sequence" for env: on a single-replica
// stream the sequence check runs before dedupe, so our own earlier try may be
// the newest event. It compares command ids before calling it a conflict
// (ErrConflict).
func (s *Store) ResolveConflict(ctx context.Context, env Envelope) (AppendResult, error) {
	h, err := s.Load(ctx, env.Workspace)
	if err != nil {
		return AppendResult{}, fmt.Errorf("after append conflict: %w", err)
	}
	if h.Last != nil && h.Last.CommandID == env.CommandID {
		return AppendResult{StreamSeq: h.StreamSeq, Duplicate: true}, nil
	}
	return AppendResult{}, ErrConflict
}

// OutcomeMsg builds the message that records an outcome.
func (s *Store) OutcomeMsg(o OutcomeRecord) (*nats.Msg, error) {
	data, err := EncodeOutcome(o)
	if err != nil {
		return nil, err
	}
	m := nats.NewMsg(s.names.Outcome(o.CommandID))
	m.Data = data
	// Distinct from the event's id: both live in one stream's dedupe table.
	m.Header.Set(jetstream.MsgIDHeader, "out:"+o.CommandID)
	// A command has one outcome, ever: the outcome subject must be empty.
	// This outlives the dedupe window, so a command id reused much later
	// cannot get a second outcome (or, in an atomic batch, a second event).
	m.Header.Set(jetstream.ExpectedLastSubjSeqHeader, "0")
	if o.Outcome != fsm.Accepted && s.rejectedTTL > 0 {
		// It changed nothing: once it expires, the command id may be
		// decided again (the command itself expired before it).
		m.Header.Set(jetstream.MsgTTLHeader, s.rejectedTTL.String())
	}
	return m, nil
}

// ErrOutcomeExists means the command already has a stored outcome; read it
// with Outcome.
var ErrOutcomeExists = errors.New("the command already has an outcome")

// PublishOutcome stores a command's outcome. It returns ErrOutcomeExists if
// the command has one already (including our own earlier try).
func (s *Store) PublishOutcome(ctx context.Context, o OutcomeRecord) (uint64, error) {
	m, err := s.OutcomeMsg(o)
	if err != nil {
		return 0, err
	}
	for attempt := 0; ; attempt++ {
		ack, err := s.js.PublishMsg(ctx, m)
		if err == nil {
			return ack.Sequence, nil
		}
		if IsWrongLastSequence(err) {
			return 0, ErrOutcomeExists
		}
		if !IsRetryable(err) || attempt >= 8 || ctx.Err() != nil {
			return 0, fmt.Errorf("publish outcome of %s: %w", o.CommandID, err)
		}
		if err := backoff(ctx, attempt); err != nil {
			return 0, err
		}
	}
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
	// Direct batch gets, not a consumer: a history read is a request like
	// any other, and a consumer per read would let many readers exhaust
	// the server's consumers (the API fuzzer did).
	subject := s.names.Event(id)
	for next := uint64(1); next <= through; {
		msgs, err := jetstreamext.GetBatch(ctx, s.js, s.names.EventStream(), historyPage,
			jetstreamext.GetBatchSeq(next), jetstreamext.GetBatchSubject(subject))
		if err != nil {
			return fmt.Errorf("history of %s: %w", id, err)
		}
		got := 0
		for m, err := range msgs {
			if errors.Is(err, jetstreamext.ErrNoMessages) {
				break
			}
			if err != nil {
				return fmt.Errorf("history of %s from stream sequence %d: %w", id, next, err)
			}
			if m.Sequence > through {
				return nil
			}
			if err := fn(s.decodeRecord(m.Subject, m.Data, m.Sequence, m.Time)); err != nil {
				return err
			}
			next = m.Sequence + 1
			got++
		}
		if got == 0 {
			// The head said events up to through exist: none left
			// before it means they were removed under us.
			return fmt.Errorf("history of %s: no event at or after stream sequence %d, though the newest is %d", id, next, through)
		}
	}
	return nil
}

// maxStepsBack bounds how many unreadable messages loadBefore steps over
// one by one before it reads the history instead.
const maxStepsBack = 16

// historyPage is how many events one direct batch get of a history asks
// for.
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
	return s.replay(ctx, from, to, fn)
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

// replay reads the event stream from sequence from to to with direct batch
// gets, not a consumer: a NATS user may read but not create consumers
// (a consumer's deliver subject could point anywhere, docs/security.md),
// and the CLI's audit --all runs as that user.
func (s *Store) replay(ctx context.Context, from, to uint64, fn func(Record) error) error {
	for next := from; next <= to; {
		msgs, err := jetstreamext.GetBatch(ctx, s.js, s.names.EventStream(), min(replayPage, int(to-next+1)),
			jetstreamext.GetBatchSeq(next))
		if err != nil {
			return fmt.Errorf("replay from stream sequence %d: %w", next, err)
		}
		got := 0
		for m, err := range msgs {
			if errors.Is(err, jetstreamext.ErrNoMessages) {
				break
			}
			if err != nil {
				return fmt.Errorf("replay from stream sequence %d: %w", next, err)
			}
			if m.Sequence > to {
				return nil
			}
			if err := fn(s.decodeRecord(m.Subject, m.Data, m.Sequence, m.Time)); err != nil {
				return err
			}
			next = m.Sequence + 1
			got++
		}
		if got == 0 {
			return nil // nothing at or after next: the rest was removed (expired outcomes)
		}
	}
	return nil
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
		return apiErr.ErrorCode == 10163 || apiErr.Code == 503
	}
	return errors.Is(err, nats.ErrTimeout) || errors.Is(err, jetstream.ErrNoStreamResponse) ||
		errors.Is(err, nats.ErrNoResponders) || errors.Is(err, nats.ErrConnectionReconnecting)
}

func backoff(ctx context.Context, attempt int) error {
	return retry.Sleep(ctx, retry.Backoff(attempt, 10*time.Millisecond, 640*time.Millisecond))
}

// Subscribe calls fn for every record of the event stream from stream
// sequence from on, including those appended later, until ctx ends or fn
// fails. Records arrive in stream order; a message that cannot be used
// comes as a Record with Unreadable set.
func (s *Store) Subscribe(ctx context.Context, from uint64, fn func(Record) error) error {
	if from == 0 {
		from = 1
	}
	cons, err := s.stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{s.names.Events(), s.names.Outcomes()},
		DeliverPolicy:  jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:    from,
	})
	if err != nil {
		return fmt.Errorf("subscribe: %w", err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(1024))
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
