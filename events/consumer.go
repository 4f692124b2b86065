package events

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/turnstile-dev/turnstile/fsm"
)

// DurableConfig configures a durable consumer of the events (not the
// outcomes) of the event stream: a part of serve that must act on every
// event at least once, acking each when done.
type DurableConfig struct {
	Durable, Description string
	// AckWait is how long the server waits for an ack before redelivering.
	AckWait time.Duration
	// MaxAckPending bounds the events delivered and not yet acked.
	MaxAckPending int
	// Pull is how many messages one pull asks for.
	Pull int
	// PinnedGroup, if set, makes the consumer's one priority group, pinned:
	// of the processes consuming it, one at a time gets the events, and
	// another only after it has sent no pull for PinnedTTL (it died).
	PinnedGroup string
	PinnedTTL   time.Duration
}

// ConsumeEvents creates (or updates) a durable consumer of every event from
// the first on and returns its messages; a message is an event's, to be
// decoded with DecodeEvent and acked by the caller. Stop the iterator to
// end.
func (s *Store) ConsumeEvents(ctx context.Context, c DurableConfig) (jetstream.MessagesContext, error) {
	cfg := jetstream.ConsumerConfig{
		Durable:       c.Durable,
		Description:   c.Description,
		FilterSubject: s.names.Events(),
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       c.AckWait,
		MaxAckPending: c.MaxAckPending,
		MaxDeliver:    -1,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	}
	opts := []jetstream.PullMessagesOpt{jetstream.PullMaxMessages(c.Pull)}
	if c.PinnedGroup != "" {
		cfg.PriorityPolicy, cfg.PriorityGroups, cfg.PinnedTTL = jetstream.PriorityPolicyPinned, []string{c.PinnedGroup}, c.PinnedTTL
		// An idle owner pulls again every 3 s, within PinnedTTL.
		opts = append(opts, jetstream.PullPriorityGroup(c.PinnedGroup), jetstream.PullExpiry(3*time.Second))
	}
	cons, err := s.js.CreateOrUpdateConsumer(ctx, s.names.EventStream(), cfg)
	if err != nil {
		return nil, fmt.Errorf("consumer %s: %w", c.Durable, err)
	}
	it, err := cons.Messages(opts...)
	if err != nil {
		return nil, fmt.Errorf("consumer %s: pull: %w", c.Durable, err)
	}
	return it, nil
}

// CreateEventConsumer creates durable consumer c of the events (not the
// outcomes) for a reader that fetches and acks on its own (c.Pull is not
// used): it gets every event stored after it returns, and with after set,
// those after stream sequence *after too. It fails if a consumer of that
// name exists already.
func (s *Store) CreateEventConsumer(ctx context.Context, c DurableConfig, after *uint64) error {
	cfg := jetstream.ConsumerConfig{
		Durable:       c.Durable,
		Description:   c.Description,
		FilterSubject: s.names.Events(),
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       c.AckWait,
		MaxAckPending: c.MaxAckPending,
		MaxDeliver:    -1,
		DeliverPolicy: jetstream.DeliverNewPolicy,
	}
	if after != nil {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, *after+1
	}
	if _, err := s.js.CreateConsumer(ctx, s.names.EventStream(), cfg); err != nil {
		return fmt.Errorf("create consumer %s: %w", c.Durable, err)
	}
	return nil
}

// EventConsumer binds to durable consumer name of the event stream, with
// its info as of now (CachedInfo). A missing one is
// jetstream.ErrConsumerNotFound.
func (s *Store) EventConsumer(ctx context.Context, name string) (jetstream.Consumer, error) {
	cons, err := s.js.Consumer(ctx, s.names.EventStream(), name)
	if err != nil {
		return nil, fmt.Errorf("consumer %s: %w", name, err)
	}
	return cons, nil
}

// DeleteEventConsumer deletes durable consumer name of the event stream;
// one that does not exist is no error.
func (s *Store) DeleteEventConsumer(ctx context.Context, name string) error {
	err := s.js.DeleteConsumer(ctx, s.names.EventStream(), name)
	if err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return fmt.Errorf("delete consumer %s: %w", name, err)
	}
	return nil
}

// PendingCommand is a user command waiting for its outcome.
type PendingCommand struct {
	Command   fsm.Command
	StreamSeq uint64    // in the command stream
	Time      time.Time // stored at
	// ActorUnproven: the command's actor reads as the HTTP API's
	// (fsm.IsAPIActor) and its proof (ActorProofHeader) does not verify
	// under the actor key PendingCommands was given, as the engine checks
	// it. Anyone who may publish commands can write such an actor; the
	// engine refuses the command when it gets to it, so until then it is
	// not to be shown as the API's.
	ActorUnproven bool
}

// PendingCommands lists workspace id's user commands after the ack floor of
// the command stream's consumer durable of id's partition (all of them when it does not
// exist: no engine ever ran) that have no outcome, reading at most max
// commands. Everything below the floor was decided; unreadable commands
// are left out (the engine refuses them, they wait for nothing). Each API
// actor's proof is checked under actorKey, the installation's; with none
// (a reader that is not serve) no API actor is proven.
func (s *Store) PendingCommands(ctx context.Context, id, durable string, max int, actorKey []byte) ([]PendingCommand, error) {
	if err := fsm.ValidateID(id); err != nil {
		return nil, err
	}
	from := uint64(1)
	parts, err := ReadPartitions(ctx, s.js, s.names)
	if err != nil {
		return nil, err
	}
	cons, err := s.js.Consumer(ctx, s.names.CommandStream(), EngineConsumer(durable, Partition(id, parts)))
	switch {
	case err == nil:
		from = cons.CachedInfo().AckFloor.Stream + 1
	case errors.Is(err, jetstream.ErrConsumerNotFound):
	default:
		return nil, fmt.Errorf("engine consumer %s: %w", durable, err)
	}
	out := []PendingCommand{}
	for next, scanned := from, 0; scanned < max; {
		// The page first, then the outcome checks: a check is a request
		// of its own, not to be made while the page's answer arrives.
		var page []*jetstream.RawStreamMsg
		req := batchRequest{Seq: next, NextFor: s.names.StoredCommands(id), Batch: min(256, max-scanned)}
		err := s.directBatch(ctx, s.names.CommandStream(), req, func(m *jetstream.RawStreamMsg) error {
			page = append(page, m)
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("read commands from stream sequence %d: %w", next, err)
		}
		if len(page) == 0 {
			break
		}
		var ids []string
		var cands []PendingCommand
		for _, m := range page {
			scanned, next = scanned+1, m.Sequence+1
			cmd, err := DecodeCommand(m.Data, id)
			if err != nil {
				continue
			}
			ids = append(ids, cmd.ID)
			// The stored headers come first in a direct get's answer, so
			// Get reads the sender's proof, as the engine does.
			unproven := fsm.IsAPIActor(cmd.Actor) &&
				CheckActorProof(actorKey, m.Header.Get(ActorProofHeader), m.Data, m.Time, s.DuplicateWindow()) != nil
			cands = append(cands, PendingCommand{Command: cmd, StreamSeq: m.Sequence, Time: m.Time, ActorUnproven: unproven})
		}
		// One request for the page's outcomes. Any replica answers (as the
		// direct gets before did): a lagging one may show a finished
		// command as queued for a moment, which a status view may. An
		// outcome that does not decode counts as one: the engine drops
		// such a command, it waits for nothing.
		held, err := s.OutcomesHeld(ctx, ids)
		if err != nil {
			return nil, err
		}
		for i, c := range cands {
			if !held[i] {
				out = append(out, c)
			}
		}
	}
	return out, nil
}
