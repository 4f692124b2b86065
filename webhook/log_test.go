package webhook_test

import (
	"bufio"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/internal/testenv"
	"github.com/turnstile-dev/turnstile/webhook"
)

// logLines is a slog destination that keeps, of each line, its length,
// its start and whether it held a secret; not the lines themselves, which
// may be megabytes.
type logLines struct {
	mu      sync.Mutex
	secrets []string
	lines   []loggedLine
}

type loggedLine struct {
	n      int
	start  string
	secret bool
}

func (l *logLines) Write(p []byte) (int, error) {
	s := string(p)
	ll := loggedLine{n: len(s), start: s[:min(len(s), 512)]}
	for _, sec := range l.secrets {
		ll.secret = ll.secret || strings.Contains(s, sec)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, ll)
	return len(p), nil
}

func (l *logLines) snapshot() []loggedLine {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]loggedLine(nil), l.lines...)
}

// rawStatus is a receiver that answers every request with status 500 and
// the given status text, written raw (net/http's server writes only the
// standard texts).
func rawStatus(t *testing.T, text string) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		_, _ = io.Copy(io.Discard, req.Body)
		conn, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer func() { _ = conn.Close() }()
		// The client may stop reading halfway: do not wait on it for long.
		_ = conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
		bw := bufio.NewWriterSize(conn, 64<<10)
		_, _ = bw.WriteString("HTTP/1.1 500 " + text + "\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
		_ = bw.Flush()
	}))
	t.Cleanup(srv.Close)
	return srv
}

// A hostile receiver cannot flood serve's log: a status text of megabytes
// (over the header bound) or of kilobytes (under it) makes a short log
// line, and no line quotes the path or query of a receiver URL, which may
// carry the receiver's own token.
func TestReceiverCannotFloodOrLeakIntoLog(t *testing.T) {
	const (
		pathSecret  = "s3cr3t-path-token"
		querySecret = "s3cr3t-query-token"
		maxLine     = 2 << 10
	)
	f := newFixture(t)
	huge := rawStatus(t, strings.Repeat("x", 8<<20))  // past the header bound, under net/http's default
	long := rawStatus(t, strings.Repeat("y", 32<<10)) // under the header bound
	for _, srv := range []*httptest.Server{huge, long} {
		if _, err := f.reg.Add(t.Context(), webhook.Spec{URL: srv.URL + "/hook/" + pathSecret + "?token=" + querySecret}); err != nil {
			t.Fatal(err)
		}
	}
	out := &logLines{secrets: []string{pathSecret, querySecret}}
	d, err := webhook.New(webhook.Config{Store: f.core.Store, Registry: f.reg, AllowPrivate: true,
		AttemptTimeout: 5 * time.Second, MinBackoff: 5 * time.Millisecond, MaxBackoff: 50 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(out, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Open(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close() })
	f.send(t, fsm.Create, "flood")

	// failures counts the logged failed attempts to srv.
	failures := func(srv *httptest.Server) int {
		n := 0
		for _, l := range out.snapshot() {
			if strings.Contains(l.start, "webhook delivery failed") && strings.Contains(l.start, srv.Listener.Addr().String()) {
				n++
			}
		}
		return n
	}
	testenv.Eventually(t, 30*time.Second, "three logged failures for each receiver", func() bool {
		return failures(huge) >= 3 && failures(long) >= 3
	})
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	sawStatus := false
	tooLong, leaks := 0, 0
	for _, l := range out.snapshot() {
		if l.n > maxLine {
			if tooLong++; tooLong == 1 {
				t.Errorf("a log line of %d bytes, more than %d: %s…", l.n, maxLine, l.start)
			}
		}
		if l.secret {
			if leaks++; leaks == 1 {
				t.Errorf("a log line quotes a receiver URL's path or query: %s…", l.start)
			}
		}
		// Under the bound the status is still told: its code, a little text.
		sawStatus = sawStatus || (strings.Contains(l.start, long.Listener.Addr().String()) && strings.Contains(l.start, "answered 500"))
	}
	if tooLong+leaks > 0 {
		t.Errorf("%d lines over %d bytes, %d quoting a URL's path or query", tooLong, maxLine, leaks)
	}
	if !sawStatus {
		t.Error("no log line tells the status the receiver answered")
	}
}
