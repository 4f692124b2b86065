package events

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/turnstile-dev/turnstile/fsm"
)

// EventMsgForTest is the message Commit sends for env after expected, for
// tests that write what a writer in another state would.
func (s *Store) EventMsgForTest(env Envelope, expected uint64) (*nats.Msg, error) {
	m, err := s.eventMsg(env)
	if err != nil {
		return nil, err
	}
	m.Header.Set(jetstream.ExpectedLastSubjSeqHeader, fmt.Sprint(expected))
	return m, nil
}

// OutcomeMsgForTest is the message Commit sends for o.
func (s *Store) OutcomeMsgForTest(o OutcomeRecord) (*nats.Msg, error) { return s.outcomeMsg(o) }

// DecodeCommandFastForTest is DecodeCommand's fast path alone.
func DecodeCommandFastForTest(b []byte, subject string) (fsm.Command, bool) {
	return decodeCommandFast(b, subject)
}

// DecodeCommandStrictForTest is DecodeCommand's strict decoder alone.
func DecodeCommandStrictForTest(b []byte, subject string) (fsm.Command, error) {
	return decodeCommandStrict(b, subject)
}

// WithAfterPartitionsCheck returns o with a hook that runs when a start
// has found streams made before partitions, before it claims their P.
func WithAfterPartitionsCheck(o StreamOptions, f func()) StreamOptions {
	o.afterPartitionsCheck = f
	return o
}

// PublishOutcomeForTest is publishOutcome: o alone, as the single path
// stores it once its lookup found none.
func (s *Store) PublishOutcomeForTest(ctx context.Context, o OutcomeRecord) (uint64, error) {
	return s.publishOutcome(ctx, o)
}

// ErrOutcomeExistsForTest is errOutcomeExists.
var ErrOutcomeExistsForTest = errOutcomeExists
