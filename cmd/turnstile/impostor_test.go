package main

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/turnstile-dev/turnstile/api"
)

// recorder keeps everything a fake listener received, as text.
type recorder struct {
	mu  sync.Mutex
	got []string
}

func (r *recorder) add(s string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, s)
}

func (r *recorder) all() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.got, "\n")
}

// impostorInfo is the INFO line a fake NATS greets with: auth required,
// with a nonce to sign.
const impostorInfo = `INFO {"server_id":"impostor","server_name":"impostor","version":"2.15.2","proto":1,"headers":true,` +
	`"max_payload":1048576,"auth_required":true,"nonce":"impostor-nonce"}` + "\r\n"

// listenTCP listens on a free loopback port and serves each connection
// with handle (closed after it, within 30 s), until the test ends; it
// returns the address.
func listenTCP(t *testing.T, handle func(net.Conn)) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { _ = l.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer conn.Close()
				_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
				handle(conn)
			})
		}
	})
	return l.Addr().String()
}

// fakeNATS listens on a free port and speaks just enough NATS for a client
// to authenticate: an INFO with a nonce, then it records the CONNECT line
// and refuses it, as an impostor on serve's port would.
func fakeNATS(t *testing.T) (url string, rec *recorder) {
	t.Helper()
	rec = &recorder{}
	addr := listenTCP(t, func(conn net.Conn) {
		_, _ = conn.Write([]byte(impostorInfo))
		line, _ := bufio.NewReader(conn).ReadString('\n')
		rec.add(line)
		_, _ = conn.Write([]byte("-ERR 'Authorization Violation'\r\n"))
	})
	return "nats://" + addr, rec
}

// A stale api-url or nats-url (serve stopped; kept in the data dir) or the
// default port may be held by another local user. The CLI must send them
// neither the API token nor the NATS token or seed: over HTTP it asks the
// listener to prove it holds the token first, over NATS it signs the
// listener's nonce with its nkey. With the real serve both paths work.
func TestCredentialsNotSentToAnImpostor(t *testing.T) {
	secret, err := api.NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	natsToken, err := newToken()
	if err != nil {
		t.Fatal(err)
	}
	// A data dir as serve leaves it, its URL files naming the impostors.
	dataDir := func(t *testing.T, files map[string]string) string {
		dir := t.TempDir()
		for name, v := range files {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(v+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		for _, f := range []string{natsNkeyFile, natsAdminNkeyFile} {
			if _, err := natsNkeyIn(filepath.Join(dir, f)); err != nil {
				t.Fatal(err)
			}
		}
		return dir
	}

	t.Run("HTTP", func(t *testing.T) {
		var rec recorder
		fake := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			dump, _ := httputil.DumpRequest(r, true)
			rec.add(string(dump))
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"proofs":["x"],"id":"web","status":"running","webhooks":[]}`))
		}))
		defer fake.Close()
		dir := dataDir(t, map[string]string{apiURLFile: fake.URL, apiTokenFile: secret})
		for _, args := range [][]string{{"get", "web"}, {"list"}, {"webhook", "list"}, {"history", "web", "--follow"}, {"status"}} {
			code, out, errs := runCLI(t, map[string]string{"TURNSTILE_DATA_DIR": dir}, args...)
			if code != exitError || !strings.Contains(errs, "did not prove") || !strings.Contains(errs, fake.URL) {
				t.Errorf("turnstile %s against a fake API: exit %d, stdout %q, stderr %q; want exit 1 and why the token was not sent",
					strings.Join(args, " "), code, out, errs)
			}
		}
		// The token named by environment, not the data dir, is held back too.
		env := map[string]string{"TURNSTILE_DATA_DIR": t.TempDir(), "TURNSTILE_API_URL": fake.URL, "TURNSTILE_API_TOKEN": "ci:" + secret}
		if code, _, errs := runCLI(t, env, "get", "web"); code != exitError || !strings.Contains(errs, "did not prove") {
			t.Errorf("get with TURNSTILE_API_TOKEN against a fake API: exit %d, stderr %q", code, errs)
		}
		if got := rec.all(); strings.Contains(got, secret) {
			t.Fatalf("the fake API received the API token:\n%s", got)
		}
	})

	t.Run("NATS", func(t *testing.T) {
		url, rec := fakeNATS(t)
		dir := dataDir(t, map[string]string{natsURLFile: url, natsTokenFile: natsToken})
		code, out, errs := runCLI(t, map[string]string{"TURNSTILE_DATA_DIR": dir}, "history", "web")
		if code != exitError || !strings.Contains(errs, "refused this client") {
			t.Errorf("history against a fake NATS: exit %d, stdout %q, stderr %q", code, out, errs)
		}
		// rebuild's admin role, on the same stale nats-url.
		a := &app{streams: streams{out: &strings.Builder{}, err: &strings.Builder{}}, dataDir: dir, getenv: func(string) string { return "" }}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if nc, err := a.connectNATSAdmin(ctx); err == nil {
			nc.Close()
			t.Fatal("the admin connection to a fake NATS succeeded")
		}
		got := rec.all()
		for _, f := range []string{natsNkeyFile, natsAdminNkeyFile} {
			seed, err := os.ReadFile(filepath.Join(dir, f))
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(got, strings.TrimSpace(string(seed))) {
				t.Fatalf("the fake NATS received the seed of %s:\n%s", f, got)
			}
		}
		if strings.Contains(got, natsToken) || strings.Count(got, `"nkey":"U`) != 2 {
			t.Fatalf("the fake NATS received the NATS token, or not the two nkey signatures instead:\n%s", got)
		}
	})

	t.Run("RealServe", func(t *testing.T) {
		s := startInProcessServe(t, nil)
		// The HTTP path, as the README's tour takes it: the data dir only.
		env := map[string]string{"TURNSTILE_DATA_DIR": s.dir}
		for _, args := range [][]string{{"create", "web", "--wait"}, {"get", "web"}, {"webhook", "list"}, {"status"}} {
			if code, out, errs := runCLI(t, env, args...); code != 0 {
				t.Fatalf("turnstile %s over HTTP: exit %d\n%s%s", strings.Join(args, " "), code, out, errs)
			}
		}
		// The direct path, with the data dir's nkey.
		if code, out, errs := runCLI(t, s.env, "history", "web"); code != 0 || !strings.Contains(out, "created") {
			t.Fatalf("history over NATS: exit %d\n%s%s", code, out, errs)
		}
		if _, err := os.Stat(filepath.Join(s.dir, legacyAdminTokenFile)); !os.IsNotExist(err) {
			t.Fatalf("%s: %v, want none: the admin role takes its nkey only", legacyAdminTokenFile, err)
		}
	})
}
