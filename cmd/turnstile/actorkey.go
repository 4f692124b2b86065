package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/turnstile-dev/turnstile/events"
)

// The installation's actor key (events.ActorProof) lives in a JetStream
// key-value bucket, not in the data dir: every serve of an installation,
// on any host, proves and checks the HTTP API's actors with the same key.
// Neither NATS role may read the bucket (rolePermissions lists what they
// may; the --nats-url configuration in docs/operations.md likewise).

// actorKeyEntry is the key's entry in keysBucket.
const actorKeyEntry = "api-actor"

// keysBucket names the bucket of serve's keys.
func keysBucket(n events.Names) string { return strings.ToUpper(n.Prefix) + "_KEYS" }

// loadActorKey returns the installation's actor key: the bucket's, or one
// made now when there is none (the first serve's start; a racing serve's
// create fails and it reads the winner's).
func loadActorKey(ctx context.Context, js jetstream.JetStream, n events.Names, replicas int) ([]byte, error) {
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      keysBucket(n),
		Description: "Turnstile's keys (the HTTP API's actor proofs): serve's connections only",
		History:     1,
		Replicas:    replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("keys bucket %s: %w", keysBucket(n), err)
	}
	for range 2 {
		e, err := kv.Get(ctx, actorKeyEntry)
		switch {
		case err == nil:
			if k := e.Value(); len(k) == events.ActorKeySize {
				return k, nil
			}
			return nil, fmt.Errorf("keys bucket %s: entry %s is %d bytes, not an actor key of %d; delete it to have serve make a new one (commands the API sent under the old key and not yet decided are then refused)",
				keysBucket(n), actorKeyEntry, len(e.Value()), events.ActorKeySize)
		case !errors.Is(err, jetstream.ErrKeyNotFound):
			return nil, fmt.Errorf("keys bucket %s: %w", keysBucket(n), err)
		}
		key := make([]byte, events.ActorKeySize)
		if _, err := rand.Read(key); err != nil {
			return nil, fmt.Errorf("make the actor key: %w", err)
		}
		_, err = kv.Create(ctx, actorKeyEntry, key)
		switch {
		case err == nil:
			return key, nil
		case !errors.Is(err, jetstream.ErrKeyExists):
			return nil, fmt.Errorf("keys bucket %s: %w", keysBucket(n), err)
		}
		// Another serve made it meanwhile: read that one.
	}
	return nil, fmt.Errorf("keys bucket %s: entry %s was made and removed while serve read it", keysBucket(n), actorKeyEntry)
}
