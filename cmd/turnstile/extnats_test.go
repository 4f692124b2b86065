package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/turnstile-dev/turnstile/internal/testenv"
)

const (
	servePassword = "serve-password-for-the-test"
	userPassword  = "user-password-for-the-test"
)

// TestDocumentedNATSAccounts runs docs/operations.md's nats-server
// configuration for --nats-url as written: an installation made under the
// earlier configuration (serve in the global account) is moved as the
// page says, serve runs as turnstile-serve, the CLI as turnstile-user,
// and a user's requests answered on serve's subjects (the reply subject,
// which no permission checks: TestReplySubjectsWriteNothing) store
// nothing.
func TestDocumentedNATSAccounts(t *testing.T) {
	conf := documentedNATSConfig(t)
	store := t.TempDir()
	dbURL := testenv.StartPostgres(t).NewDatabase(t)
	dir := t.TempDir()
	serveEnv := func(url string) map[string]string {
		return map[string]string{"TURNSTILE_NATS_URL": url, "TURNSTILE_NATS_USER": "turnstile-serve",
			"TURNSTILE_NATS_PASSWORD": servePassword, "TURNSTILE_DATABASE_URL": dbURL, "TURNSTILE_DATA_DIR": dir}
	}
	cli := func(t *testing.T, env map[string]string, args ...string) string {
		t.Helper()
		code, out, errs := runCLI(t, env, args...)
		if code != 0 {
			t.Fatalf("%v: exit %d\n%s%s", args, code, out, errs)
		}
		return out
	}

	// The earlier configuration: one authorization block, so serve and its
	// streams in the global account.
	t.Run("Before", func(t *testing.T) {
		url := startConfiguredNATS(t, `jetstream { store_dir: "`+store+`" }
authorization { users = [ { user: turnstile-serve, password: "`+servePassword+`" } ] }`)
		startInProcessServe(t, serveEnv(url))
		env := serveEnv(url)
		env["TURNSTILE_DATA_DIR"] = t.TempDir()
		cli(t, env, "create", "victim", "--wait")
	})
	if t.Failed() {
		return
	}
	// Moved as the page says, for one nats-server.
	if err := os.Rename(filepath.Join(store, "jetstream", "$G"), filepath.Join(store, "jetstream", "TURNSTILE")); err != nil {
		t.Fatal(err)
	}
	url := startConfiguredNATS(t, strings.ReplaceAll(conf, `"/var/lib/nats"`, `"`+store+`"`))
	startInProcessServe(t, serveEnv(url))
	user := map[string]string{"TURNSTILE_NATS_URL": url, "TURNSTILE_NATS_USER": "turnstile-user",
		"TURNSTILE_NATS_PASSWORD": userPassword, "TURNSTILE_DATA_DIR": t.TempDir(), "TURNSTILE_DATABASE_URL": dbURL}
	// The history is read from the event stream.
	if out := cli(t, user, "history", "victim"); !strings.Contains(out, "created") {
		t.Fatalf("victim's history after the move:\n%s", out)
	}
	cli(t, user, "create", "x", "--wait")
	// --wait returns once the event stream says running; get reads the
	// read model, which the projector brings there a moment later.
	testenv.Eventually(t, 30*time.Second, "get x says running", func() bool {
		return strings.Contains(cli(t, user, "get", "x"), "running")
	})
	if out := cli(t, user, "history", "x"); !strings.Contains(out, "created") {
		t.Fatalf("history x:\n%s", out)
	}
	cli(t, user, "audit", "--all")

	nc, err := nats.Connect(url, nats.UserInfo("turnstile-user", userPassword))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	replySubjectsWriteNothing(t, nc, js, user)
}

var natsConfigBlock = regexp.MustCompile("(?s)<!-- nats-server-config -->\\s*```\\n(.*?)```")

// documentedNATSConfig is docs/operations.md's nats-server configuration
// with the test's passwords in place of its variables.
func documentedNATSConfig(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	m := natsConfigBlock.FindAllSubmatch(b, -1)
	if len(m) != 1 {
		t.Fatalf("docs/operations.md has %d nats-server-config blocks, want 1", len(m))
	}
	conf := string(m[0][1])
	for from, to := range map[string]string{"$SERVE_PASSWORD": servePassword, "$USER_PASSWORD": userPassword, `"/var/lib/nats"`: ""} {
		if !strings.Contains(conf, from) {
			t.Fatalf("the documented configuration has no %s:\n%s", from, conf)
		}
		if to != "" {
			conf = strings.ReplaceAll(conf, from, `"`+to+`"`)
		}
	}
	return conf
}

// startConfiguredNATS runs a nats-server in this process from a
// configuration file's text, on a free loopback port, until the test ends.
func startConfiguredNATS(t *testing.T, conf string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "nats-server.conf")
	if err := os.WriteFile(f, []byte("listen: \"127.0.0.1:-1\"\n"+conf), 0o600); err != nil {
		t.Fatal(err)
	}
	o, err := server.ProcessConfigFile(f)
	if err != nil {
		t.Fatal(err)
	}
	o.NoSigs = true
	srv, err := server.NewServer(o)
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	t.Cleanup(func() {
		srv.Shutdown()
		srv.WaitForShutdown()
	})
	if !srv.ReadyForConnections(30 * time.Second) {
		t.Fatal("nats-server not ready in 30s")
	}
	return srv.ClientURL()
}
