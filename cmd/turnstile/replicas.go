package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/internal/retry"
)

// streamReplicas is the replica count serve gives every stream it ensures:
// --replicas when given; else 1 on the embedded server, and on --nats-url
// what the event stream has now (1 when it does not exist yet), so that a
// serve started without the flag never shrinks a replicated installation.
func (s *service) streamReplicas(ctx context.Context, js jetstream.JetStream) (int, error) {
	n := s.cfg.replicas
	if n != 0 {
		if err := events.ValidateReplicas(n); err != nil {
			return 0, usageError(fmt.Errorf("--replicas: %w", err))
		}
		if n > 1 && s.embedded != nil {
			return 0, usageError(fmt.Errorf("--replicas %d: the embedded NATS is one server; replicas need --nats-url to a NATS cluster of at least %d servers (docs/scale-out.md)", n, n))
		}
		return n, nil
	}
	if s.embedded != nil {
		return 1, nil
	}
	st, err := js.Stream(ctx, s.names.EventStream())
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return 1, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read the replicas of stream %s: %w", s.names.EventStream(), err)
	}
	return max(st.CachedInfo().Config.Replicas, 1), nil
}

// ensureStreamsFor is how long serve retries creating its streams while a
// NATS cluster that has just started elects its leaders.
const ensureStreamsFor = time.Minute

// ensureStreams runs events.EnsureStreams, retrying while the servers are
// not ready for it (untilReady). A replica count the servers cannot hold,
// or any other refusal, fails at once.
func (s *service) ensureStreams(ctx context.Context, js jetstream.JetStream, o events.StreamOptions) error {
	err := s.untilReady(ctx, "create the streams", func() error { return events.EnsureStreams(ctx, js, s.names, o) })
	if err == nil {
		s.log.Info("streams ready", "replicas", o.Replicas, "commands", s.names.CommandStream(),
			"system", s.names.SystemStream(), "events", s.names.EventStream())
	}
	return err
}

// untilReady runs fn, again while it fails the way servers that are not
// ready answer (a request that times out, "JetStream temporarily
// unavailable", no responders), for up to ensureStreamsFor: a cluster
// started together with serve has its meta leader some seconds later, and
// a loaded one may leave a stream without quorum for a while. Any other
// error fails at once.
func (s *service) untilReady(ctx context.Context, what string, fn func() error) error {
	deadline := time.Now().Add(ensureStreamsFor)
	for attempt := 0; ; attempt++ {
		err := fn()
		if err == nil || ctx.Err() != nil || !notReady(err) || time.Now().After(deadline) {
			return err
		}
		s.log.Warn("NATS is not ready to "+what+" yet; retrying", "err", err)
		if err := retry.Sleep(ctx, retry.Backoff(attempt, 100*time.Millisecond, 2*time.Second)); err != nil {
			return err
		}
	}
}

// notReady reports an error that a JetStream cluster still electing its
// leaders answers.
func notReady(err error) bool {
	var api *jetstream.APIError
	if errors.As(err, &api) {
		// Not "JetStream not enabled": that does not pass by waiting.
		return api.Code == http.StatusServiceUnavailable && api.ErrorCode != jetstream.JSErrCodeJetStreamNotEnabled &&
			api.ErrorCode != jetstream.JSErrCodeJetStreamNotEnabledForAccount
	}
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) || errors.Is(err, nats.ErrNoResponders)
}
