package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/turnstile-dev/turnstile/events"
)

// streamReplicas is the replica count serve gives every stream it ensures:
// --replicas when given (more than 1 only with --nats-url, which serve's
// RunE checks before anything starts); else 1 on the embedded server, and
// on --nats-url what the event stream has now (1 when it does not exist
// yet), so that a serve started without the flag never shrinks a
// replicated installation.
func (s *service) streamReplicas(ctx context.Context, js jetstream.JetStream) (int, error) {
	n := s.cfg.replicas
	if n != 0 {
		if err := events.ValidateReplicas(n); err != nil {
			return 0, usageError(fmt.Errorf("--replicas: %w", err))
		}
		return n, nil
	}
	if s.embedded != nil {
		return 1, nil
	}
	var st jetstream.Stream
	err := s.untilReady(ctx, "read the streams' replicas", func(ctx context.Context) (err error) {
		st, err = js.Stream(ctx, s.names.EventStream())
		return err
	})
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

// ensureStreams runs events.EnsureStreams, which tries again while the
// servers are not ready for up to ensureStreamsFor, logging each such
// try. A replica count the servers cannot hold, or any other refusal,
// fails at once.
func (s *service) ensureStreams(ctx context.Context, js jetstream.JetStream, o events.StreamOptions) error {
	o.ReadyWait = ensureStreamsFor
	o.OnNotReady = func(err error) { s.log.Warn("NATS is not ready to create the streams yet; retrying", "err", err) }
	err := events.EnsureStreams(ctx, js, s.names, o)
	if err == nil {
		s.log.Info("streams ready", "replicas", o.Replicas, "commands", s.names.CommandStream(),
			"system", s.names.SystemStream(), "events", s.names.EventStream())
	}
	return err
}

// untilReady runs fn, again while it fails the way servers that are not
// ready answer (events.NotReady), for up to ensureStreamsFor: a cluster
// started together with serve has its meta leader some seconds later, and
// a loaded one may leave a stream without quorum for a while. Any other
// error fails at once. fn gets a context bounded to one try; a step whose
// result keeps its context (the engine) uses serve's own instead.
func (s *service) untilReady(ctx context.Context, what string, fn func(context.Context) error) error {
	wctx, cancel := context.WithTimeout(ctx, ensureStreamsFor)
	defer cancel()
	return events.UntilReady(wctx, fn,
		func(err error) { s.log.Warn("NATS is not ready to "+what+" yet; retrying", "err", err) })
}
