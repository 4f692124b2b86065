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
	// Replicas of each stream; 0 means 1.
	Replicas int
	// DuplicateWindow is how long a command id is remembered for dedupe; 0
	// means 2 minutes (the server's default).
	DuplicateWindow time.Duration
	// CommandMaxAge bounds how long commands and system reports are kept
	// after they are handled; 0 means 7 days. Events and outcomes are kept forever.
	CommandMaxAge time.Duration
	// Memory keeps streams in memory (tests and benchmarks only).
	Memory bool
}

// EnsureStreams creates the command, system report and event streams, or verifies and
// updates them if they exist. It fails if an existing stream cannot be
// brought to the expected configuration.
func EnsureStreams(ctx context.Context, js jetstream.JetStream, n Names, o StreamOptions) error {
	if o.Replicas == 0 {
		o.Replicas = 1
	}
	if o.DuplicateWindow == 0 {
		o.DuplicateWindow = 2 * time.Minute
	}
	if o.CommandMaxAge == 0 {
		o.CommandMaxAge = 7 * 24 * time.Hour
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
	}}
	for _, cfg := range cfgs {
		if _, err := js.CreateOrUpdateStream(ctx, cfg); err != nil {
			return fmt.Errorf("ensure stream %s: %w", cfg.Name, err)
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
	// StreamSeq is the stream sequence of the newest event, 0 if none: the
	// expected last subject sequence of the next append.
	StreamSeq uint64
	// Last is the newest event, nil if none.
	Last *Envelope
}

// Store is the event store on JetStream. It is safe for concurrent use.
type Store struct {
	js     jetstream.JetStream
	names  Names
	codec  Codec
	stream jetstream.Stream
}

// OpenStore binds to the event stream, which EnsureStreams must have created.
func OpenStore(ctx context.Context, js jetstream.JetStream, n Names, c Codec) (*Store, error) {
	st, err := js.Stream(ctx, n.EventStream())
	if err != nil {
		return nil, fmt.Errorf("open event stream %s: %w", n.EventStream(), err)
	}
	return &Store{js: js, names: n, codec: c, stream: st}, nil
}

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
	env, err := s.codec.Decode(msg.Data)
	if err != nil {
		return Head{}, fmt.Errorf("load workspace %s at stream sequence %d: %w", id, msg.Sequence, err)
	}
	env.StreamSeq = msg.Sequence
	return Head{State: env.State, StreamSeq: msg.Sequence, Last: &env}, nil
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
// newest event at the time of the call.
func (s *Store) History(ctx context.Context, id string, fn func(Envelope) error) error {
	if err := fsm.ValidateID(id); err != nil {
		return err
	}
	h, err := s.Load(ctx, id)
	if err != nil || h.StreamSeq == 0 {
		return err
	}
	// Direct batch gets, not a consumer: a history read is a request like
	// any other, and a consumer per read would let many readers exhaust
	// the server's consumers (the API fuzzer did).
	subject := s.names.Event(id)
	for next := uint64(1); next <= h.StreamSeq; {
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
			if m.Sequence > h.StreamSeq {
				return nil
			}
			env, err := s.codec.Decode(m.Data)
			if err != nil {
				return fmt.Errorf("history of %s at stream sequence %d: %w", id, m.Sequence, err)
			}
			env.StreamSeq = m.Sequence
			if err := fn(env); err != nil {
				return err
			}
			next = m.Sequence + 1
			got++
		}
		if got == 0 {
			// The head said events up to h.StreamSeq exist: none left
			// before it means they were removed under us.
			return fmt.Errorf("history of %s: no event at or after stream sequence %d, though the newest is %d", id, next, h.StreamSeq)
		}
	}
	return nil
}

// historyPage is how many events one direct batch get of a history asks
// for.
const historyPage = 512

// Record is one message of the event stream: an event or an outcome.
type Record struct {
	StreamSeq uint64
	Time      time.Time
	Event     *Envelope      // set for events
	Outcome   *OutcomeRecord // set for outcomes
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
	return s.replay(ctx, []string{s.names.Events(), s.names.Outcomes()}, from, to, func(m jetstream.Msg, seq uint64) error {
		r, err := s.decodeRecord(m.Subject(), m.Data(), seq)
		if err != nil {
			return err
		}
		return fn(r)
	})
}

func (s *Store) decodeRecord(subject string, data []byte, seq uint64) (Record, error) {
	r := Record{StreamSeq: seq}
	if s.names.IsEvent(subject) {
		env, err := s.codec.Decode(data)
		if err != nil {
			return r, fmt.Errorf("stream sequence %d: %w", seq, err)
		}
		env.StreamSeq = seq
		r.Event, r.Time = &env, env.Time
		return r, nil
	}
	o, err := DecodeOutcome(data)
	if err != nil {
		return r, fmt.Errorf("stream sequence %d: %w", seq, err)
	}
	r.Outcome, r.Time = &o, o.DecidedAt
	return r, nil
}

// replay reads subjects from sequence from to to with an ordered consumer.
func (s *Store) replay(ctx context.Context, subjects []string, from, to uint64, fn func(jetstream.Msg, uint64) error) error {
	cons, err := s.stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects: subjects,
		DeliverPolicy:  jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:    from,
	})
	if err != nil {
		return fmt.Errorf("replay: %w", err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(2048))
	if err != nil {
		return fmt.Errorf("replay: %w", err)
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
			return fmt.Errorf("replay: %w", err)
		}
		md, err := m.Metadata()
		if err != nil {
			return fmt.Errorf("replay: %w", err)
		}
		seq := md.Sequence.Stream
		if seq > to {
			return nil
		}
		if err := fn(m, seq); err != nil {
			return err
		}
		if seq == to || md.NumPending == 0 {
			return nil
		}
	}
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
// fails. Records arrive in stream order.
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
		r, err := s.decodeRecord(m.Subject(), m.Data(), md.Sequence.Stream)
		if err != nil {
			return err
		}
		if err := fn(r); err != nil {
			return err
		}
	}
}
