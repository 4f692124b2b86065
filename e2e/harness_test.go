package e2e_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
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

// binDir holds the turnstile binary TestMain built.
var binDir string

func runMain(m *testing.M) int {
	dir, remove, err := testenv.BuildTurnstile("turnstile-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer remove()
	binDir = dir
	return m.Run()
}

// syncBuffer is a bytes.Buffer safe for a process writing while a test reads.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// server is one running `turnstile serve`.
type server struct {
	t        *testing.T
	dir      string // working directory: the data dir is dir/.turnstile
	natsPort int
	httpPort int
	args     []string
	env      []string
	cmd      *exec.Cmd
	stderr   *syncBuffer
	done     chan struct{}
	exitErr  error
}

type serveOptions struct {
	args []string // extra serve flags
	env  []string // extra environment
	dir  string   // reuse a working directory (a restart); "" makes one
	// natsPort and httpPort reuse ports (a restart); 0 picks free ones.
	natsPort, httpPort int
	// noWait returns without waiting for readiness (for failures).
	noWait bool
}

// startServe runs `turnstile serve` in a fresh working directory with the
// embedded NATS and the HTTP API on free ports, and waits for /readyz. It is
// stopped with SIGTERM when the test ends.
func startServe(t *testing.T, o serveOptions) *server {
	t.Helper()
	s := &server{t: t, dir: o.dir, natsPort: o.natsPort, httpPort: o.httpPort, stderr: &syncBuffer{}, done: make(chan struct{})}
	if s.dir == "" {
		s.dir = testenv.WorkDir(t, "turnstile-e2e-")
	}
	if s.natsPort == 0 {
		s.natsPort = testenv.FreePort(t)
	}
	if s.httpPort == 0 {
		s.httpPort = testenv.FreePort(t)
	}
	s.args = append([]string{"serve"}, o.args...)
	s.env = append([]string{
		fmt.Sprintf("TURNSTILE_NATS_LISTEN=127.0.0.1:%d", s.natsPort),
		fmt.Sprintf("TURNSTILE_HTTP_ADDR=127.0.0.1:%d", s.httpPort),
		"TURNSTILE_LOG_FORMAT=text",
	}, o.env...)
	s.start()
	t.Cleanup(func() { s.stop() })
	if !o.noWait {
		s.waitReady()
	}
	return s
}

func (s *server) start() {
	s.cmd = exec.Command(filepath.Join(binDir, "turnstile"), s.args...)
	s.cmd.Dir = s.dir
	s.cmd.Env = append(baseEnv(), s.env...)
	s.cmd.Stdout = s.stderr
	s.cmd.Stderr = s.stderr
	if err := s.cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	go func() {
		s.exitErr = s.cmd.Wait()
		close(s.done)
	}()
}

// baseEnv is the test's environment without TURNSTILE_ variables, so a
// developer's settings do not leak into the processes.
func baseEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "TURNSTILE_") {
			out = append(out, kv)
		}
	}
	return out
}

func (s *server) natsURL() string { return fmt.Sprintf("nats://127.0.0.1:%d", s.natsPort) }
func (s *server) httpURL() string { return fmt.Sprintf("http://127.0.0.1:%d", s.httpPort) }

// clientEnv is what client commands need to find this server.
func (s *server) clientEnv() []string {
	return []string{"TURNSTILE_NATS_URL=" + s.natsURL()}
}

// waitReady polls /readyz until it answers 200, failing the test with the
// server's log if the process exits or a minute passes.
func (s *server) waitReady() {
	s.t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	hc := &http.Client{Timeout: 2 * time.Second}
	for {
		resp, err := hc.Get(s.httpURL() + "/readyz")
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case <-s.done:
			s.t.Fatalf("serve exited before it was ready (%v):\n%s", s.exitErr, s.stderr)
		case <-tick.C:
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("serve not ready after 90s:\n%s", s.stderr)
		}
	}
}

// terminate sends SIGTERM and waits for the exit; it returns the exit code.
func (s *server) terminate(timeout time.Duration) int {
	s.t.Helper()
	select {
	case <-s.done:
	default:
		_ = s.cmd.Process.Signal(syscall.SIGTERM)
		t := time.NewTimer(timeout)
		defer t.Stop()
		select {
		case <-s.done:
		case <-t.C:
			_ = s.cmd.Process.Kill()
			<-s.done
			s.t.Errorf("serve did not stop within %v of SIGTERM:\n%s", timeout, s.stderr)
		}
	}
	return exitCode(s.exitErr)
}

// stop ends the server at cleanup and logs its output if the test failed.
func (s *server) stop() {
	s.terminate(time.Minute)
	if s.t.Failed() {
		s.t.Logf("serve output:\n%s", s.stderr)
	}
}

// waitExit waits for the process to end by itself.
func (s *server) waitExit(timeout time.Duration) int {
	s.t.Helper()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-s.done:
		return exitCode(s.exitErr)
	case <-t.C:
		s.t.Fatalf("serve still runs after %v:\n%s", timeout, s.stderr)
		return -1
	}
}

func exitCode(err error) int {
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.ExitCode()
	}
	return -1
}

// result is what a finished CLI process left.
type result struct {
	code           int
	stdout, stderr string
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
}

// turnstile runs the CLI against s (nil: no server) in s's directory.
func (s *server) turnstile(t *testing.T, args ...string) result {
	t.Helper()
	return runIn(t, s.dir, s.clientEnv(), append([]string{filepath.Join(binDir, "turnstile")}, args...)...)
}

// runIn runs argv in dir with the base environment plus env, bounded to
// three minutes.
func runIn(t *testing.T, dir string, env []string, argv ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = dir
	cmd.Env = append(baseEnv(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("%v did not finish in 3 minutes:\n%s\n%s", argv, out.String(), errb.String())
	}
	code := exitCode(err)
	if code < 0 {
		t.Fatalf("%v: %v", argv, err)
	}
	return result{code: code, stdout: out.String(), stderr: errb.String()}
}

// want fails the test unless r exited with code.
func want(t *testing.T, r result, code int, what string) {
	t.Helper()
	if r.code != code {
		t.Fatalf("%s: want exit %d, got %s", what, code, r)
	}
}

// noToken makes httpDo send no Authorization header.
const noToken = "<none>"

// apiToken is the token serve generated into its data dir, as a user reads
// it: $(cat .turnstile/api-token); "" when there is none.
func (s *server) apiToken(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(s.dir, ".turnstile", "api-token"))
	if errors.Is(err, os.ErrNotExist) {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// httpDo sends one request to s's API and returns the status and body. An
// empty token sends the one serve generated (if any), noToken none; a body
// goes as application/json.
func (s *server) httpDo(t *testing.T, method, path, body, token string) (int, []byte) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, s.httpURL()+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	switch token {
	case noToken:
		token = ""
	case "":
		token = s.apiToken(t)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	hc := &http.Client{Timeout: 2 * time.Minute}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}
