package reliability_test

import (
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// dockerProxy is a unix socket that forwards every connection to the real
// Docker engine, byte for byte, and can be cut (the listener closed and
// every open connection dropped, so that new calls fail at once and calls
// and event streams in flight break) and restored on the same path.
type dockerProxy struct {
	t        *testing.T
	path     string
	upstream [2]string // network, address

	mu    sync.Mutex
	ln    net.Listener
	conns map[net.Conn]struct{}
	epoch int // counts cuts: a connection accepted before a cut must not outlive it
	cuts  int
	wg    sync.WaitGroup
}

// startDockerProxy listens on a socket in a fresh directory and forwards
// to daemonHost (the test client's DaemonHost: unix:// or tcp://). It is
// closed when the test ends.
func startDockerProxy(t *testing.T, daemonHost string) *dockerProxy {
	t.Helper()
	u, err := url.Parse(daemonHost)
	if err != nil {
		t.Fatalf("Docker host %q: %v", daemonHost, err)
	}
	p := &dockerProxy{t: t, conns: map[net.Conn]struct{}{}}
	switch u.Scheme {
	case "unix":
		p.upstream = [2]string{"unix", u.Path}
	case "tcp":
		p.upstream = [2]string{"tcp", u.Host}
	default:
		t.Fatalf("Docker host %q: the proxy forwards to unix:// and tcp:// only", daemonHost)
	}
	// Short: a socket path must fit in 108 bytes.
	dir, err := os.MkdirTemp("", "tsdock-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	p.path = filepath.Join(dir, "docker.sock")
	if err := p.listen(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.close)
	return p
}

// host is the DOCKER_HOST that reaches the engine through the proxy.
func (p *dockerProxy) host() string { return "unix://" + p.path }

func (p *dockerProxy) listen() error {
	_ = os.Remove(p.path)
	ln, err := net.Listen("unix", p.path)
	if err != nil {
		return fmt.Errorf("docker proxy: %w", err)
	}
	p.mu.Lock()
	p.ln = ln
	epoch := p.epoch
	p.mu.Unlock()
	p.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return // closed by cut
			}
			p.wg.Go(func() { p.forward(c, epoch) })
		}
	})
	return nil
}

// forward copies between c and a new connection to the engine until either
// side ends or the proxy is cut.
func (p *dockerProxy) forward(c net.Conn, epoch int) {
	up, err := net.Dial(p.upstream[0], p.upstream[1])
	if err != nil {
		_ = c.Close()
		return
	}
	p.mu.Lock()
	if p.epoch != epoch { // cut while dialling
		p.mu.Unlock()
		_ = c.Close()
		_ = up.Close()
		return
	}
	p.conns[c], p.conns[up] = struct{}{}, struct{}{}
	p.mu.Unlock()
	var once sync.Once
	end := func() {
		once.Do(func() {
			_ = c.Close()
			_ = up.Close()
			p.mu.Lock()
			delete(p.conns, c)
			delete(p.conns, up)
			p.mu.Unlock()
		})
	}
	var wg sync.WaitGroup
	wg.Go(func() { _, _ = io.Copy(up, c); end() })
	wg.Go(func() { _, _ = io.Copy(c, up); end() })
	wg.Wait()
}

// cut closes the listener (the socket file goes with it, so new
// connections fail at once) and every open connection.
func (p *dockerProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln == nil {
		return
	}
	_ = p.ln.Close()
	p.ln = nil
	p.epoch++
	p.cuts++
	for c := range p.conns {
		_ = c.Close()
	}
	clear(p.conns)
}

// restore listens again on the same path.
func (p *dockerProxy) restore() {
	p.t.Helper()
	if err := p.listen(); err != nil {
		p.t.Fatal(err)
	}
}

func (p *dockerProxy) close() {
	p.cut()
	p.wg.Wait()
}
