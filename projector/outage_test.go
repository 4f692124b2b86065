package projector_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/stdlib"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/internal/testenv"
	"github.com/turnstile-dev/turnstile/migrations"
)

// TestNATSRestart stops NATS under a running projector and starts it again
// on the same port and storage: the projector resumes without help.
func TestNATSRestart(t *testing.T) {
	port := testenv.FreePort(t)
	dir := t.TempDir()
	srv := startNATSAt(t, port, dir)
	nc, err := nats.Connect(srv.ClientURL(), nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	e := &env{names: events.NewNames(""), nc: nc, js: js}
	if err := events.EnsureStreams(ctx, js, e.names, events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	if e.store, err = events.OpenStore(ctx, js, e.names, events.Codec{}); err != nil {
		t.Fatal(err)
	}
	e.pool = openPool(t, pg.NewDatabase(t))
	db := stdlib.OpenDBFromPool(e.pool)
	defer db.Close()
	if err := migrations.Up(ctx, db); err != nil {
		t.Fatal(err)
	}

	g := newGenerator(e.names, 30, 14)
	p := e.projector(t, nil)
	stop := run(t, p)
	g.publish(t, js, 300)
	e.waitCaughtUp(t, 30*time.Second)

	srv.Shutdown()
	srv.WaitForShutdown()
	startNATSAt(t, port, dir)
	waitFor(t, 30*time.Second, "the client to reconnect", func(context.Context) (bool, error) {
		return nc.IsConnected(), nil
	})
	g.publish(t, js, 300)
	e.waitCaughtUp(t, 30*time.Second)
	stop()
	e.assertCounts(t, g)
	e.assertEqualsRebuild(t, p)
}

func startNATSAt(t *testing.T, port int, dir string) *server.Server {
	t.Helper()
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: port, JetStream: true,
		StoreDir: dir, NoSigs: true, NoLog: true})
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready in 10s")
	}
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	return s
}
