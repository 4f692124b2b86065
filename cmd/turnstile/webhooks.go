package main

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/turnstile-dev/turnstile/api"
	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/webhook"
)

// startWebhooks opens the webhook registry (its KV bucket, which only
// serve's connections may read) and starts the dispatcher on nc; the API
// manages the registry.
func (s *service) startWebhooks(ctx context.Context) error {
	js, err := jetstream.New(s.conns["webhooks"])
	if err != nil {
		return err
	}
	store, err := s.openStore(ctx, js)
	if err != nil {
		return err
	}
	hooks, err := webhook.OpenRegistry(ctx, js, store, webhook.RegistryOptions{AllowPrivate: s.cfg.webhookAllowPrivate, Replicas: s.replicas})
	if err != nil {
		return fmt.Errorf("webhooks: %w", err)
	}
	d, err := webhook.New(webhook.Config{Store: store, Registry: hooks, AllowPrivate: s.cfg.webhookAllowPrivate,
		Render:     func(ctx context.Context, env events.Envelope) (any, error) { return api.EventIn(ctx, store, env) },
		Registerer: s.reg, Logger: s.log.With("component", "webhook")})
	if err != nil {
		return err
	}
	if err := d.Open(ctx); err != nil {
		return err
	}
	s.push("webhooks", func(context.Context) error { return d.Close() })
	if s.cfg.webhookAllowPrivate {
		s.log.Warn("webhooks may call loopback, private and link-local addresses (--webhook-allow-private)")
	}
	s.hooks = hooks
	return nil
}
