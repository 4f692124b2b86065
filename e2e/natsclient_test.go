package e2e_test

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/turnstile-dev/turnstile/client"
)

// userNATS connects to s's NATS as a user does: with the user role's token
// serve wrote, as the CLI finds it (none with an external NATS).
func (s *server) userNATS(t *testing.T, extra ...nats.Option) *nats.Conn {
	t.Helper()
	opts := append([]nats.Option{nats.MaxReconnects(-1), nats.ReconnectWait(100 * time.Millisecond)}, extra...)
	tok, err := os.ReadFile(filepath.Join(s.dir, ".turnstile", "nats-token"))
	switch {
	case err == nil:
		opts = append(opts, nats.Token(strings.TrimSpace(string(tok))))
	case !errors.Is(err, fs.ErrNotExist):
		t.Fatal(err)
	}
	nc, err := nats.Connect(s.natsURL(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// goClient connects the Go client package to s, as a service would.
func (s *server) goClient(t *testing.T) (*client.Client, jetstream.JetStream) {
	t.Helper()
	nc := s.userNATS(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cl, err := client.New(ctx, nc, client.Options{Actor: "e2e", PollInterval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cl.Close() })
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return cl, js
}
