package reliability_test

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/turnstile-dev/turnstile/internal/testenv"
)

// syncBuffer keeps the tail of a process's output, safe for concurrent use.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

const keepOutput = 256 << 10

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf.Write(p)
	if b.buf.Len() > 2*keepOutput {
		tail := append([]byte(nil), b.buf.Bytes()[b.buf.Len()-keepOutput:]...)
		b.buf.Reset()
		b.buf.Write(tail)
	}
	return len(p), nil
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// baseEnv is the environment without TURNSTILE_ variables.
// natsToken is the token serve's embedded NATS requires of the tests'
// clients (its user role); an external NATS without authentication ignores
// it.
const natsToken = "reliability-nats-token-0123456789abcdef"

func baseEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "TURNSTILE_") {
			out = append(out, kv)
		}
	}
	return out
}

// serveOptions say how to run serve.
type serveOptions struct {
	databaseURL string // --database-url (an external PostgreSQL)
	natsURL     string // --nats-url; "" runs the embedded server
	// provisioner is --provisioner; "" is sim.
	provisioner string
	// env is added after the defaults, so it can also override them (the
	// last of two equal keys wins in exec.Cmd.Env).
	env []string
}

// serve is one `turnstile serve` (--provisioner sim unless serveOptions
// say otherwise) that can be killed and started again on the same data dir
// and ports.
type serve struct {
	t        *testing.T
	dir      string
	natsPort int
	httpPort int
	env      []string
	out      *syncBuffer

	mu    sync.Mutex
	cmd   *exec.Cmd
	done  chan struct{}
	err   error
	kills int
	// down is the total time from each kill to ready again.
	down time.Duration
}

// startServe starts serve and waits until it is ready; it is stopped (and
// its output logged on failure) when the test ends.
func startServe(t *testing.T, o serveOptions) *serve {
	t.Helper()
	s := &serve{t: t, dir: testenv.WorkDir(t, "turnstile-reliability-"), natsPort: testenv.FreePort(t), httpPort: testenv.FreePort(t), out: &syncBuffer{}}
	s.env = []string{
		"TURNSTILE_NATS_TOKEN=" + natsToken,
		"TURNSTILE_DATA_DIR=" + filepath.Join(s.dir, "data"),
		fmt.Sprintf("TURNSTILE_NATS_LISTEN=127.0.0.1:%d", s.natsPort),
		fmt.Sprintf("TURNSTILE_HTTP_ADDR=127.0.0.1:%d", s.httpPort),
		"TURNSTILE_DATABASE_URL=" + o.databaseURL,
		"TURNSTILE_NATS_URL=" + o.natsURL,
		"TURNSTILE_PROVISIONER=" + cmp.Or(o.provisioner, "sim"),
		"TURNSTILE_SIM_MIN_LATENCY=5ms",
		"TURNSTILE_SIM_MAX_LATENCY=50ms",
		// Attempts cut short by a kill end by deadline, not after 10 minutes.
		"TURNSTILE_DEADLINE_PROVISIONING=10s",
		"TURNSTILE_DEADLINE_STOPPING=10s",
		"TURNSTILE_DEADLINE_DELETING=10s",
		"TURNSTILE_LOG_FORMAT=text",
		"TURNSTILE_LOG_LEVEL=warn",
	}
	s.env = append(s.env, o.env...)
	if o.natsURL != "" {
		s.natsPort = 0
	}
	if err := s.start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.stop)
	s.waitReady(2 * time.Minute)
	return s
}

func (s *serve) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	cmd := exec.Command(filepath.Join(binDir, "turnstile"), "serve")
	cmd.Dir = s.dir
	cmd.Env = append(baseEnv(), s.env...)
	cmd.Stdout, cmd.Stderr = s.out, s.out
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	s.cmd, s.done = cmd, done
	go func() {
		err := cmd.Wait()
		s.mu.Lock()
		s.err = err
		s.mu.Unlock()
		close(done)
	}()
	return nil
}

func (s *serve) httpURL() string { return fmt.Sprintf("http://127.0.0.1:%d", s.httpPort) }

// apiGet GETs path from serve's API with the token serve generated into its
// data dir (TURNSTILE_DATA_DIR), as a user would: $(cat <data-dir>/api-token).
func (s *serve) apiGet(hc *http.Client, path string) (*http.Response, error) {
	token, err := os.ReadFile(filepath.Join(s.dir, "data", "api-token"))
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequest(http.MethodGet, s.httpURL()+path, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
	return hc.Do(req)
}

// waitReady polls /readyz until it answers 200, failing the test if it
// does not. Call it from the test's goroutine; others use ready.
func (s *serve) waitReady(timeout time.Duration) {
	s.t.Helper()
	if err := s.ready(timeout); err != nil {
		s.t.Fatal(err)
	}
}

// ready polls /readyz until it answers 200.
func (s *serve) ready(timeout time.Duration) error {
	s.mu.Lock()
	done := s.done
	s.mu.Unlock()
	hc := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(timeout)
	for {
		resp, err := hc.Get(s.httpURL() + "/readyz")
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-done:
			s.mu.Lock()
			defer s.mu.Unlock()
			return fmt.Errorf("serve exited before it was ready (%v)", s.err)
		case <-time.After(50 * time.Millisecond): // poll interval
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("serve not ready after %v", timeout)
		}
	}
}

// kill9 kills serve with SIGKILL and waits for the process to be gone.
func (s *serve) kill9() {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.kills++
	s.mu.Unlock()
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-done
}

// dataDir is serve's data dir (TURNSTILE_DATA_DIR).
func (s *serve) dataDir() string { return filepath.Join(s.dir, "data") }

// restart starts serve again on the same data dir and ports and waits until
// it is ready.
func (s *serve) restart() error {
	begin := time.Now()
	if err := s.start(); err != nil {
		return err
	}
	err := s.ready(2 * time.Minute)
	s.mu.Lock()
	s.down += time.Since(begin)
	s.mu.Unlock()
	return err
}

// stop ends serve with SIGTERM (SIGKILL after a minute).
func (s *serve) stop() {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.mu.Unlock()
	select {
	case <-done:
	default:
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(time.Minute):
			_ = cmd.Process.Kill()
			<-done
			s.t.Errorf("serve did not stop within a minute of SIGTERM")
		}
	}
	if s.t.Failed() {
		s.t.Logf("serve output (tail):\n%s", s.out)
	}
}

// result is what a finished CLI process left.
type result struct {
	code           int
	stdout, stderr string
}

// cli runs the turnstile CLI with env, bounded to three minutes.
func cli(t *testing.T, env []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "turnstile"), args...)
	cmd.Env = append(append(baseEnv(), "TURNSTILE_NATS_TOKEN="+natsToken), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("turnstile %v did not finish in 3 minutes:\n%s\n%s", args, out.String(), errb.String())
	}
	code := 0
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatalf("turnstile %v: %v", args, err)
	}
	return result{code: code, stdout: out.String(), stderr: errb.String()}
}

// poll calls cond every interval until it holds, failing the test after
// timeout.
func poll(t *testing.T, timeout, interval time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(interval) // poll interval, not synchronization
	}
}
