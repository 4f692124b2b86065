package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// silentNATS listens on a free port, accepts every connection and never
// says a word: an address held by something that is not NATS, or a NATS
// that hangs. Each accepted connection is announced on the channel.
func silentNATS(t *testing.T) (url string, accepted <-chan struct{}) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	acc := make(chan struct{}, 16)
	var mu sync.Mutex
	var conns []net.Conn
	var wg sync.WaitGroup
	t.Cleanup(func() {
		_ = l.Close()
		mu.Lock()
		for _, c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			select {
			case acc <- struct{}{}:
			default:
			}
			wg.Go(func() { _, _ = io.Copy(io.Discard, c) }) // until the client hangs up
		}
	})
	return "nats://" + l.Addr().String(), acc
}

// runAsync runs the CLI with ctx in a goroutine; the channel gets its exit
// code and stderr.
func runAsync(ctx context.Context, env map[string]string, args ...string) <-chan [2]any {
	done := make(chan [2]any, 1)
	go func() {
		var out, errb bytes.Buffer
		code := run(ctx, args, streams{in: strings.NewReader(""), out: &out, err: &errb}, func(k string) string { return env[k] })
		done <- [2]any{code, errb.String()}
	}()
	return done
}

// TestNATSConnectEndsWithTheCommand: a direct-path command whose NATS
// address takes the connection and never answers stops when its context
// ends (Ctrl-C, SIGTERM), not when its own deadline (2 minutes for a
// lifecycle command, 5 for history) would; without a signal, the silence
// is reported after natsConnectTimeout.
func TestNATSConnectEndsWithTheCommand(t *testing.T) {
	for _, args := range [][]string{{"create", "ux-bh"}, {"history", "ux-bh"}, {"status"}} {
		t.Run("Cancel/"+args[0], func(t *testing.T) {
			t.Parallel()
			url, accepted := silentNATS(t)
			env := map[string]string{"TURNSTILE_NATS_URL": url, "TURNSTILE_DATA_DIR": t.TempDir()}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := runAsync(ctx, env, args...)
			select {
			case <-accepted:
			case <-time.After(30 * time.Second):
				t.Fatal("the command did not connect in 30s")
			}
			cancel() // as the first SIGINT does (runWithSignals)
			select {
			case r := <-done:
				if r[0] != exitError || !strings.Contains(r[1].(string), "context canceled") {
					t.Fatalf("exit %v, stderr %q; want 1 and the cancellation", r[0], r[1])
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("turnstile %s still waits on NATS 5s after its context ended", strings.Join(args, " "))
			}
		})
	}
	t.Run("Silence", func(t *testing.T) {
		t.Parallel()
		url, _ := silentNATS(t)
		env := map[string]string{"TURNSTILE_NATS_URL": url, "TURNSTILE_DATA_DIR": t.TempDir()}
		start := time.Now()
		select {
		case r := <-runAsync(context.Background(), env, "history", "ux-bh"):
			if r[0] != exitError || !strings.Contains(r[1].(string), "cannot reach NATS at") {
				t.Fatalf("exit %v, stderr %q; want 1 and cannot reach NATS", r[0], r[1])
			}
			if took := time.Since(start); took < natsConnectTimeout/2 {
				t.Fatalf("gave up after %v, before the connect timeout", took)
			}
		case <-time.After(natsConnectTimeout + 30*time.Second):
			t.Fatalf("history still waits on a silent NATS after %v", natsConnectTimeout+30*time.Second)
		}
	})
}
