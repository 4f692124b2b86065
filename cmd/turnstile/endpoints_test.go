package main

import (
	"bytes"
	"context"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/turnstile-dev/turnstile/internal/testenv"
	"github.com/turnstile-dev/turnstile/read"
)

// TestWriteEndpoints: serve's URL files are 0600 and carry no password.
func TestWriteEndpoints(t *testing.T) {
	dir := t.TempDir()
	if err := writeEndpoints(dir, "http://127.0.0.1:8080", "nats://u:pw@10.0.0.1:4222,nats://10.0.0.2:4222"); err != nil {
		t.Fatal(err)
	}
	for file, want := range map[string]string{apiURLFile: "http://127.0.0.1:8080\n", natsURLFile: "nats://10.0.0.1:4222,nats://10.0.0.2:4222\n"} {
		p := filepath.Join(dir, file)
		b, err := os.ReadFile(p)
		if err != nil || string(b) != want {
			t.Fatalf("%s: %q %v, want %q", file, b, err, want)
		}
		if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: mode %v %v, want 0600", file, fi.Mode().Perm(), err)
		}
	}
}

// TestClientPath: which path client commands take, by flags and by what
// serve wrote into the data dir.
func TestClientPath(t *testing.T) {
	const tok = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFG"
	write := func(t *testing.T, dir string, files map[string]string) {
		for name, v := range files {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(v+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	served := map[string]string{apiURLFile: "http://127.0.0.1:18080", apiTokenFile: tok, natsURLFile: "nats://127.0.0.1:14222"}
	for _, tc := range []struct {
		name     string
		files    map[string]string
		set      func(a *app)
		wantHTTP string // the API URL, "" for the direct path
		wantNATS string
		usage    bool
	}{
		{name: "NothingIsDirect", wantNATS: defaultNATSURL},
		{name: "ServesFilesAreHTTP", files: served, wantHTTP: "http://127.0.0.1:18080", wantNATS: "nats://127.0.0.1:14222"},
		{name: "NATSURLFlagIsDirect", files: served, set: func(a *app) { a.natsURL = "nats://elsewhere:4222" }, wantNATS: "nats://elsewhere:4222"},
		{name: "DatabaseURLFlagIsDirect", files: served, set: func(a *app) { a.databaseURL = "postgres://x/y" }, wantNATS: "nats://127.0.0.1:14222"},
		{name: "APIURLFlagWins", files: served, set: func(a *app) { a.apiURL, a.natsURL = "https://remote:8443", "nats://x:4222" },
			wantHTTP: "https://remote:8443", wantNATS: "nats://x:4222"},
		{name: "NamedToken", set: func(a *app) { a.apiURL, a.apiToken = "http://remote:8080", "ci:"+tok }, wantHTTP: "http://remote:8080", wantNATS: defaultNATSURL},
		{name: "NoTokenIsUsage", set: func(a *app) { a.apiURL = "http://remote:8080" }, usage: true},
		{name: "BadURLIsUsage", set: func(a *app) { a.apiURL, a.apiToken = "remote:8080", tok }, usage: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			write(t, dir, tc.files)
			var errb bytes.Buffer
			a := &app{streams: streams{out: io.Discard, err: &errb}, dataDir: dir, getenv: func(string) string { return "" }}
			if tc.set != nil {
				tc.set(a)
			}
			c, ok, err := a.apiClient()
			var ce *codedError
			switch {
			case tc.usage:
				if !errors.As(err, &ce) || ce.code != exitUsage {
					t.Fatalf("want a usage error, got %v", err)
				}
				return
			case err != nil:
				t.Fatal(err)
			case tc.wantHTTP == "" && ok:
				t.Fatalf("HTTP to %s, want the direct path", c.URL())
			case tc.wantHTTP != "" && (!ok || c.URL() != tc.wantHTTP):
				t.Fatalf("HTTP %v, want HTTP to %s", ok, tc.wantHTTP)
			}
			if got := a.clientNATSURL(); got != tc.wantNATS {
				t.Fatalf("NATS URL %s, want %s", got, tc.wantNATS)
			}
			if warned := strings.Contains(errb.String(), "clear text"); warned != (strings.HasPrefix(tc.wantHTTP, "http://") && !strings.Contains(tc.wantHTTP, "127.0.0.1")) {
				t.Fatalf("clear-text warning %v for %s: %q", warned, tc.wantHTTP, errb.String())
			}
		})
	}
}

// TestAPITLSCA: an https API with a certificate of its own is verified
// with --api-tls-ca, and refused without it.
func TestAPITLSCA(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		_, _ = io.WriteString(w, `{"code":"not_found","message":"workspace x does not exist","state":"none"}`)
	}))
	defer srv.Close()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	get := func(caFile string) error {
		a := &app{streams: streams{out: io.Discard, err: io.Discard}, dataDir: t.TempDir(), apiURL: srv.URL,
			apiToken: "0123456789abcdefghijklmnopqrstuvwxyzABCDEFG", apiTLSCA: caFile, getenv: func(string) string { return "" }}
		c, ok, err := a.apiClient()
		if err != nil || !ok {
			t.Fatalf("apiClient: %v %v", ok, err)
		}
		_, err = c.Get(context.Background(), "x")
		return err
	}
	if err := get(ca); !errors.Is(err, read.ErrNoWorkspace) {
		t.Fatalf("with --api-tls-ca: %v, want the server's 404", err)
	}
	if err := get(""); err == nil || errors.Is(err, read.ErrNoWorkspace) {
		t.Fatalf("without --api-tls-ca: %v, want a certificate error", err)
	}
}

// TestWithoutUserinfo: a user and password, or a token, leave each URL of
// a list, also where url.Parse fails (no scheme, a bad escape) as nats.go
// still takes the first.
func TestWithoutUserinfo(t *testing.T) {
	for in, want := range map[string]string{
		"nats://u:pw@10.0.0.1:4222,nats://10.0.0.2:4222": "nats://10.0.0.1:4222,nats://10.0.0.2:4222",
		"nats://TOKEN@host:4222":                         "nats://host:4222",
		"nats://a:b@h1:1, nats://TOK@h2:2":               "nats://h1:1,nats://h2:2",
		"u:pw@host:4222":                                 "host:4222",
		"nats://u:p%zz@host:4222":                        "nats://host:4222",
		"nats://u:p@ss@host:4222":                        "nats://host:4222",
		"nats://u:ab/cd@host:4222":                       "nats://host:4222",
		"nats://u:a#b@host:4222":                         "nats://host:4222",
		"nats://u:a?b@host:4222,nats://t/k@h2:1":         "nats://host:4222,nats://h2:1",
		"nats://host:4222":                               "nats://host:4222",
		"tls://host:4222,host2:4222":                     "tls://host:4222,host2:4222",
	} {
		if got := withoutUserinfo(in); got != want {
			t.Errorf("withoutUserinfo(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestNATSCredentialsStayOutOfTheLog: a --nats-url with a password or a
// token is in neither serve's banner, its "serving" log line, nor an
// error that names the URL, of serve or of a client command.
func TestNATSCredentialsStayOutOfTheLog(t *testing.T) {
	const pw, tok = "pw-0123456789secret", "tok-0123456789secret"
	secretIn := func(s string) bool { return strings.Contains(s, pw) || strings.Contains(s, tok) }
	t.Run("Errors", func(t *testing.T) {
		free := testenv.FreePort(t)
		for _, u := range []string{
			fmt.Sprintf("nats://u:%s@127.0.0.1:%d", pw, free),
			fmt.Sprintf("nats://%s@127.0.0.1:%d", tok, free),
			fmt.Sprintf("nats://u:%%zz%s@127.0.0.1:%d", pw, free), // url.Parse's error quotes the URL
			fmt.Sprintf("nats://u:a/%s@127.0.0.1:%d", pw, free),   // a / in the password: so does its
		} {
			env := map[string]string{"TURNSTILE_DATA_DIR": t.TempDir(), "TURNSTILE_NATS_URL": u}
			code, out, errs := runCLI(t, env, "history", "demo")
			if code != exitError || !strings.Contains(errs, "cannot reach NATS at") || secretIn(out+errs) {
				t.Errorf("history with %s: exit %d, stdout %q, stderr %q: want a NATS error without the secret", u, code, out, errs)
			}
			env["TURNSTILE_PROVISIONER"] = "sim"
			env["TURNSTILE_HTTP_ADDR"] = fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
			env["TURNSTILE_DATABASE_URL"] = "postgres://127.0.0.1:1/none"
			code, out, errs = runCLI(t, env, "serve")
			if code == exitOK || !strings.Contains(errs, "cannot reach NATS at") || secretIn(out+errs) {
				t.Errorf("serve with %s: exit %d, stdout %q, stderr %q: want an error without the secret", u, code, out, errs)
			}
		}
	})
	t.Run("Banner", func(t *testing.T) {
		n := testenv.StartNATS(t, testenv.NATSOptions{}) // no auth: it takes any credential
		host := strings.TrimPrefix(n.URL, "nats://")
		list := fmt.Sprintf("nats://u:%s@%s,nats://%s@%s", pw, host, tok, host)
		s := startInProcessServe(t, map[string]string{"TURNSTILE_NATS_URL": list, "TURNSTILE_LOG_LEVEL": "info"})
		want := "nats://" + host + ",nats://" + host
		testenv.Eventually(t, time.Minute, "the banner and the serving line", func() bool {
			return strings.Contains(s.out.String(), "Turnstile is serving") && strings.Contains(s.out.String(), "msg=serving")
		})
		if out := s.out.String(); secretIn(out) || !strings.Contains(out, want+" (given by --nats-url)") || !strings.Contains(out, "nats="+want) {
			t.Fatalf("serve's output holds a NATS credential, or lacks %s:\n%s", want, out)
		}
	})
}
