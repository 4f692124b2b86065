package testenv

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// NATSOptions tunes the embedded server.
type NATSOptions struct {
	// SyncAlways fsyncs before every ack (server.Options.SyncAlways).
	SyncAlways bool
	// StoreDir overrides the temp dir, so a restarted server keeps its data.
	StoreDir string
}

// NATS is a running embedded nats-server.
type NATS struct {
	Server   *server.Server
	URL      string
	StoreDir string
}

// StartNATS starts an embedded nats-server with JetStream on a free loopback
// port and stops it when the test ends.
func StartNATS(tb testing.TB, o NATSOptions) *NATS {
	tb.Helper()
	dir := o.StoreDir
	if dir == "" {
		dir = tb.TempDir()
	}
	s, err := server.NewServer(&server.Options{
		Host:       "127.0.0.1",
		Port:       server.RANDOM_PORT,
		JetStream:  true,
		StoreDir:   dir,
		SyncAlways: o.SyncAlways,
		NoSigs:     true,
		NoLog:      true,
		// Generous limits: benchmarks hold many pending messages.
		MaxPayload: 1 << 20,
	})
	if err != nil {
		tb.Fatalf("nats-server: %v", err)
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		tb.Fatal("nats-server did not become ready in 10s")
	}
	n := &NATS{Server: s, URL: s.ClientURL(), StoreDir: dir}
	tb.Cleanup(n.Shutdown)
	return n
}

// Shutdown stops the server and waits for it.
func (n *NATS) Shutdown() {
	n.Server.Shutdown()
	n.Server.WaitForShutdown()
}

// Connect opens a client connection over loopback TCP, as a user's client
// connects, closed at the end of the test.
func (n *NATS) Connect(tb testing.TB) (*nats.Conn, jetstream.JetStream) {
	tb.Helper()
	return n.connect(tb)
}

// ConnectInProcess opens a connection that bypasses the network, as serve's
// own parts connect to its embedded server (nats.InProcessServer), closed
// at the end of the test. It cannot outlive the server: a restarted one is
// a new server.
func (n *NATS) ConnectInProcess(tb testing.TB) (*nats.Conn, jetstream.JetStream) {
	tb.Helper()
	return n.connect(tb, nats.InProcessServer(n.Server))
}

func (n *NATS) connect(tb testing.TB, extra ...nats.Option) (*nats.Conn, jetstream.JetStream) {
	tb.Helper()
	opts := append([]nats.Option{nats.MaxReconnects(-1), nats.ReconnectWait(50 * time.Millisecond)}, extra...)
	nc, err := nats.Connect(n.URL, opts...)
	if err != nil {
		tb.Fatalf("connect to %s: %v", n.URL, err)
	}
	tb.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		tb.Fatalf("jetstream: %v", err)
	}
	return nc, js
}

// DirectGets counts the JetStream direct get requests the server receives
// from now on whose subject or body contains part (an outcome subject's
// prefix, a stream's name): Requests on $JS.API.DIRECT.GET.>.
func DirectGets(tb testing.TB, nc *nats.Conn, part string) func() int {
	tb.Helper()
	return Requests(tb, nc, "$JS.API.DIRECT.GET.>", part)
}

// Requests counts the requests on subject (wildcards allowed) the server
// receives from now on whose subject or body contains part ("": every
// one), on a subscription of nc: each call of the returned func says how
// many so far. It flushes nc first, so every request sent before the call
// is counted (the server queues them on nc before its answer to the
// flush).
func Requests(tb testing.TB, nc *nats.Conn, subject, part string) func() int {
	tb.Helper()
	sub, err := nc.SubscribeSync(subject)
	if err != nil {
		tb.Fatal(err)
	}
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		tb.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		tb.Fatal(err)
	}
	n := 0
	return func() int {
		tb.Helper()
		if err := nc.Flush(); err != nil {
			tb.Fatal(err)
		}
		for {
			if q, _, err := sub.Pending(); err != nil || q == 0 {
				return n
			}
			m, err := sub.NextMsg(time.Second)
			if err != nil {
				tb.Fatal(err)
			}
			if strings.Contains(m.Subject, part) || strings.Contains(string(m.Data), part) {
				n++
			}
		}
	}
}

// AwaitAcks waits for the acks of futures, in order, and fails the test
// on the first publish that failed, or that ctx ends without an ack for,
// naming its index and subject.
func AwaitAcks(tb testing.TB, ctx context.Context, futures []jetstream.PubAckFuture) {
	tb.Helper()
	if err := AckError(ctx, futures); err != nil {
		tb.Fatal(err)
	}
}

// AckError is AwaitAcks for a goroutine that is not the test's, which may
// not fail the test itself: it returns the first failure instead of nil.
func AckError(ctx context.Context, futures []jetstream.PubAckFuture) error {
	for i, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return fmt.Errorf("publish %d of %d on %s: %w", i, len(futures), f.Msg().Subject, err)
		case <-ctx.Done():
			return fmt.Errorf("publish %d of %d on %s: no ack: %w", i, len(futures), f.Msg().Subject, context.Cause(ctx))
		}
	}
	return nil
}

// Drained reports whether every durable consumer of stream has taken and
// had acked every message stored on its subjects: nothing pending, nothing
// unacked, and its ack floor at the last such message. A stream without a
// durable is not drained. Pending alone is no proof: the server acks a
// publish and only then counts the message pending for the stream's
// consumers (another goroutine), so a consumer read just after a publish
// can say 0 pending and 0 unacked for a message it has not delivered.
func Drained(ctx context.Context, js jetstream.JetStream, stream string) (bool, error) {
	st, err := js.Stream(ctx, stream)
	if err != nil {
		return false, err
	}
	var durables []*jetstream.ConsumerInfo
	lister := st.ListConsumers(ctx)
	for info := range lister.Info() { // read to the end: the lister's goroutine waits
		if info.Config.Durable != "" {
			durables = append(durables, info)
		}
	}
	if err := lister.Err(); err != nil {
		return false, err
	}
	if len(durables) == 0 {
		return false, nil
	}
	for _, info := range durables {
		if info.NumPending != 0 || info.NumAckPending != 0 {
			return false, nil
		}
		filters := info.Config.FilterSubjects
		if info.Config.FilterSubject != "" {
			filters = append(filters, info.Config.FilterSubject)
		}
		if len(filters) == 0 {
			filters = []string{">"}
		}
		for _, f := range filters {
			last, err := st.GetLastMsgForSubject(ctx, f)
			switch {
			case errors.Is(err, jetstream.ErrMsgNotFound):
			case err != nil:
				return false, err
			case info.AckFloor.Stream < last.Sequence:
				return false, nil
			}
		}
	}
	return true, nil
}
