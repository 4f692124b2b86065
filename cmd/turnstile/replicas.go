package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/turnstile-dev/turnstile/events"
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
