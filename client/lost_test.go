package client_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/turnstile-dev/turnstile/client"
	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/internal/testenv"
)

// cutProxy forwards NATS connections to a server until a client sends
// mark: that is swallowed and the connections dropped, as when a server
// goes away just after a request reached the socket, before the client
// noticed. With refuse it then takes no connection more (NATS is away);
// without, clients reconnect through it (NATS came back at once).
type cutProxy struct {
	ln     net.Listener
	target string
	mark   []byte
	refuse bool
	cut    chan struct{} // closed at the cut
	once   sync.Once
	mu     sync.Mutex
	conns  []net.Conn
	wg     sync.WaitGroup
}

func newCutProxy(t *testing.T, target string, mark []byte, refuse bool) *cutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln, target: target, mark: mark, refuse: refuse, cut: make(chan struct{})}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(func() { _ = ln.Close(); p.closeAll(); p.wg.Wait() })
	return p
}

func (p *cutProxy) url() string { return "nats://" + p.ln.Addr().String() }

func (p *cutProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, s)
		p.mu.Unlock()
		p.wg.Add(2)
		go func() { defer p.wg.Done(); _, _ = io.Copy(c, s) }()
		go func() { defer p.wg.Done(); p.forward(s, c) }()
	}
}

// forward copies src to dst until src sends the mark (once per proxy).
func (p *cutProxy) forward(dst, src net.Conn) {
	var tail []byte // the end of what came before, for a mark split across reads
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			seen := append(tail, buf[:n]...)
			cut := false
			if bytes.Contains(seen, p.mark) {
				p.once.Do(func() {
					cut = true
					if p.refuse {
						_ = p.ln.Close()
					}
					p.closeAll()
					close(p.cut)
				})
			}
			if cut {
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
			tail = append(tail[:0], seen[max(0, len(seen)-len(p.mark)):]...)
		}
		if err != nil {
			return
		}
	}
}

func (p *cutProxy) closeAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		_ = c.Close()
	}
	p.conns = nil
}

// TestSendWhenNATSGoesAwayMidRequest: a request in flight when the
// connection is lost is never answered, and nats.go fails it only at its
// context's end. The API's Send, publishing (or first looking up the
// outcome of a caller's id) just as NATS went away, used to wait for the
// whole command timeout and answer after the caller had given up
// (TestAPICommandsLandFresh under load: no answer within 30 s, want 503).
// Each request now has its own bound, and Send reports NATS unavailable
// long before its context ends.
func TestSendWhenNATSGoesAwayMidRequest(t *testing.T) {
	core := testenv.StartCore(t, testenv.CoreOptions{})
	for _, tc := range []struct {
		name string
		id   string // "" publishes at once (SendNew); else the lookup is lost
	}{
		{name: "Publish"},
		{name: "Lookup", id: "stop-lookup-lost"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := tc.id
			if id == "" {
				id = client.NewCommandID()
			}
			p := newCutProxy(t, core.NATS.Server.Addr().String(), []byte(id), true)
			// As serve's API connects with --nats-url: nothing buffered
			// across a reconnect.
			nc, err := nats.Connect(p.url(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond), nats.ReconnectBufSize(-1))
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			cl, err := client.New(ctx, nc, client.Options{Actor: "api:default", ActorKey: core.ActorKey})
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = cl.Close() }()
			cmd := fsm.Command{ID: id, Type: fsm.Stop, Workspace: "away"}
			send := cl.Send
			if tc.id == "" {
				send = cl.SendNew
			}
			_, err = send(ctx, cmd)
			select {
			case <-p.cut:
			default:
				t.Fatalf("Send returned (%v) without its request reaching the proxy", err)
			}
			if ctx.Err() != nil {
				t.Fatalf("Send answered only at its context's end: %v", err)
			}
			if !events.IsUnavailable(err) || errors.Is(err, client.ErrNoOutcome) {
				t.Fatalf("Send while NATS is away: %v, want NATS unavailable", err)
			}
		})
	}
}

// TestAwaitReadLostMidRequest: a read of the stored outcome lost with the
// connection used to hold Send's wait until its context ended, while the
// engine's direct reply, arriving meanwhile, sat unread: a command decided
// in time was answered as having no outcome. Each read now has its own
// bound, and the reply is taken.
func TestAwaitReadLostMidRequest(t *testing.T) {
	core := testenv.StartCore(t, testenv.CoreOptions{})
	// Streams of their own, which no engine decides: the test answers
	// the command itself, after the client's read of its outcome is lost.
	names := events.NewNames("lost")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := events.EnsureStreams(ctx, core.JS, names, events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	cmds, err := core.NC.SubscribeSync(names.Command("away"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmds.Unsubscribe() }()
	// The command comes on another connection: the subscription must be
	// at the server first.
	if err := core.NC.Flush(); err != nil {
		t.Fatal(err)
	}
	id := client.NewCommandID()
	p := newCutProxy(t, core.NATS.Server.Addr().String(), []byte(names.Outcome(id)), false)
	nc, err := nats.Connect(p.url(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond), nats.ReconnectBufSize(-1))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	cl, err := client.New(ctx, nc, client.Options{Prefix: "lost", Actor: "api:default", ActorKey: core.ActorKey,
		PollInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cl.Close() }()

	// The engine's part: once the read is lost, reply to the command,
	// again until Send returns (the client resubscribes on reconnect).
	sent := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		m, err := cmds.NextMsg(20 * time.Second)
		if err != nil {
			return
		}
		b, err := events.EncodeOutcome(events.OutcomeRecord{CommandID: id, Workspace: "away", CommandType: fsm.Stop,
			Outcome: fsm.Accepted, EventSeq: 1, Generation: 1, State: fsm.Stopping, DecidedAt: time.Now()})
		if err != nil {
			return
		}
		select {
		case <-p.cut:
		case <-sent:
			return
		}
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			_ = core.NC.Publish(m.Header.Get(events.ReplyHeader), b)
			select {
			case <-tick.C:
			case <-sent:
				return
			}
		}
	}()
	o, err := cl.SendNew(ctx, fsm.Command{ID: id, Type: fsm.Stop, Workspace: "away"})
	close(sent)
	wg.Wait()
	select {
	case <-p.cut:
	default:
		t.Fatalf("Send returned (%v) before a read of its outcome was lost", err)
	}
	if err != nil || ctx.Err() != nil || o.CommandID != id || o.Outcome != fsm.Accepted {
		t.Fatalf("Send with its outcome replied after a lost read: %+v %v (context: %v)", o, err, ctx.Err())
	}
}
