package testenv

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// FreePort returns a loopback port nobody listens on right now, for a
// server the test starts later. Below the kernel's ephemeral range when it
// can: a port :0 gives is from that range, where every outgoing
// connection (the tests make thousands) also takes its local port, and one
// could take it before the server binds it.
func FreePort(tb testing.TB) int {
	tb.Helper()
	lo := ephemeralLow()
	for range 100 {
		port := minPickedPort + rand.IntN(lo-minPickedPort) //nolint:gosec // G404: a test server's port, not a secret
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue // in use: another
		}
		_ = l.Close()
		return port
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// minPickedPort is the lowest port FreePort picks: above the well-known and
// the commonly registered ones (PostgreSQL's 5432, NATS's 4222, 8080).
const minPickedPort = 10000

// ephemeralLow is the first port of the kernel's ephemeral range (Linux's
// default 32768 when it cannot be read).
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	var lo, hi int
	if err != nil {
		return 32768
	}
	if _, err := fmt.Sscan(string(b), &lo, &hi); err != nil || lo <= minPickedPort+1000 {
		return 32768
	}
	return lo
}

// WorkDir is a directory the postgres OS user can traverse (t.TempDir's
// parents are private to root, and a PostgreSQL started by serve runs as
// postgres when the tests run as root). It is removed when the test ends.
func WorkDir(tb testing.TB, prefix string) string {
	tb.Helper()
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		tb.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

// BuildTurnstile builds the turnstile binary into a fresh directory, static
// as users are told to build it (serve copies that very binary into the
// default workspace image). It is for TestMain, so it takes no testing.TB;
// remove returns the directory.
func BuildTurnstile(prefix string) (dir string, remove func(), err error) {
	dir, err = os.MkdirTemp("", prefix)
	if err != nil {
		return "", nil, err
	}
	remove = func() { _ = os.RemoveAll(dir) }
	cmd := exec.Command("go", "build", "-o", filepath.Join(dir, "turnstile"), "github.com/turnstile-dev/turnstile/cmd/turnstile") //nolint:noctx // for TestMain, which has no context
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		remove()
		return "", nil, fmt.Errorf("go build turnstile: %w\n%s", err, out)
	}
	return dir, remove, nil
}
