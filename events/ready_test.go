package events

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// A try that goes unanswered is made again when its time is up, not held
// until the caller's deadline; an error NATS means as final comes back at
// once ("JetStream not enabled" too: waiting does not mend it); the
// caller's deadline ends the tries; and each not-ready failure is told.
func TestUntilReadyTriesAgain(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tries, told := 0, 0
	start := time.Now()
	err := untilReady(ctx, 50*time.Millisecond, time.Hour, func(ctx context.Context) error {
		tries++
		if tries < 3 {
			<-ctx.Done() // lost: no answer before the try's time is up
			return ctx.Err()
		}
		return nil
	}, func(error) { told++ })
	if err != nil || tries != 3 || told != 2 {
		t.Fatalf("got %v after %d tries, %d told; want success at the third, 2 told", err, tries, told)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("took %v: the tries were not bounded", d)
	}

	for _, final := range []error{
		&jetstream.APIError{Code: 400, ErrorCode: jetstream.JSErrCodeStreamNameInUse},
		&jetstream.APIError{Code: 503, ErrorCode: jetstream.JSErrCodeJetStreamNotEnabled},
		&jetstream.APIError{Code: 503, ErrorCode: jsErrCodeInsufficientResources},
		// Too few servers for the replicas: no peer is offline.
		&jetstream.APIError{Code: 500, ErrorCode: jsErrCodeClusterNoPeers, Description: "no suitable peers for placement"},
	} {
		tries = 0
		err = untilReady(ctx, 50*time.Millisecond, time.Hour, func(context.Context) error {
			tries++
			return final
		}, nil)
		if !errors.Is(err, final) || tries != 1 {
			t.Fatalf("got %v after %d tries, want %v at once", err, tries, final)
		}
	}

	tries = 0
	err = untilReady(ctx, 50*time.Millisecond, time.Hour, func(context.Context) error {
		tries++
		if tries < 3 {
			return &jetstream.APIError{Code: 503, ErrorCode: jsErrCodeClusterNotAvailable, Description: "JetStream system temporarily unavailable"}
		}
		return nil
	}, nil)
	if err != nil || tries != 3 {
		t.Fatalf("temporarily unavailable: got %v after %d tries, want success at the third", err, tries)
	}

	// A placement that lacks a peer because it is offline waits for it.
	tries = 0
	err = untilReady(ctx, 50*time.Millisecond, time.Hour, func(context.Context) error {
		tries++
		if tries < 3 {
			return &jetstream.APIError{Code: 500, ErrorCode: jsErrCodeClusterNoPeers, Description: "no suitable peers for placement, peer offline"}
		}
		return nil
	}, nil)
	if err != nil || tries != 3 {
		t.Fatalf("peer offline: got %v after %d tries, want success at the third", err, tries)
	}

	// No responders is a server still starting for a while, then a
	// server without JetStream.
	tries = 0
	err = untilReady(ctx, 50*time.Millisecond, 300*time.Millisecond, func(context.Context) error {
		tries++
		return nats.ErrNoResponders
	}, nil)
	if !errors.Is(err, nats.ErrNoResponders) || !strings.Contains(err.Error(), "is JetStream enabled") || tries < 2 {
		t.Fatalf("no responders: got %v after %d tries, want it retried, then the question", err, tries)
	}

	short, stop := context.WithTimeout(ctx, 200*time.Millisecond)
	defer stop()
	err = untilReady(short, 50*time.Millisecond, time.Hour, func(ctx context.Context) error {
		<-ctx.Done()
		return ctx.Err()
	}, nil)
	if !errors.Is(err, context.DeadlineExceeded) || short.Err() == nil {
		t.Fatalf("got %v with the caller's deadline passed: %v", err, short.Err())
	}
}

// EnsureStreams bounds its own wait: against servers that never answer
// the JetStream API, a caller without a deadline gets the error back
// after ReadyWait, saying NATS was not ready.
func TestEnsureStreamsWaitIsBounded(t *testing.T) {
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, NoSigs: true, NoLog: true})
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	defer s.Shutdown()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	// Without JetStream the server leaves $JS.API to subscribers: this
	// one takes every request and answers none.
	sub, err := nc.Subscribe("$JS.API.>", func(*nats.Msg) {})
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err = EnsureStreams(context.Background(), js, NewNames(""), StreamOptions{ReadyWait: time.Second})
	if err == nil || !strings.Contains(err.Error(), "not ready within 1s") || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want NATS not ready within 1s", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("took %v with a ReadyWait of 1s", d)
	}

	// Without the silent subscriber no one answers at all: each try ends
	// at once with no responders and EnsureStreams tries again, telling
	// each, until its wait is over.
	if err := sub.Unsubscribe(); err != nil {
		t.Fatal(err)
	}
	told := 0
	err = EnsureStreams(context.Background(), js, NewNames(""), StreamOptions{ReadyWait: time.Second, OnNotReady: func(error) { told++ }})
	if !errors.Is(err, nats.ErrNoResponders) || !strings.Contains(err.Error(), "not ready within 1s") || told < 2 {
		t.Fatalf("got %v after %d told tries, want no responders, tried again until the wait was over", err, told)
	}
}
