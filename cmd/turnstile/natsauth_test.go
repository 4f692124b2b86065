package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/internal/testenv"
)

// lockedBuffer is a bytes.Buffer safe for serve writing while a test reads.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// inProcessServe is `turnstile serve --provisioner sim` run in this process
// on a throwaway data dir and ports.
type inProcessServe struct {
	dir, natsURL string
	env          map[string]string // for client commands
	httpURL      string
	out          *lockedBuffer // serve's stdout and stderr
}

func startInProcessServe(t *testing.T, extra map[string]string) *inProcessServe {
	t.Helper()
	// A test that restarts serve passes its database and data dir.
	dbURL, dir := extra["TURNSTILE_DATABASE_URL"], extra["TURNSTILE_DATA_DIR"]
	if dbURL == "" {
		dbURL = testenv.StartPostgres(t).NewDatabase(t)
	}
	if dir == "" {
		dir = t.TempDir()
	}
	natsAddr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	httpAddr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	env := map[string]string{
		"TURNSTILE_DATA_DIR": dir, "TURNSTILE_NATS_LISTEN": natsAddr, "TURNSTILE_HTTP_ADDR": httpAddr,
		"TURNSTILE_DATABASE_URL": dbURL, "TURNSTILE_PROVISIONER": "sim", "TURNSTILE_LOG_LEVEL": "warn",
		"TURNSTILE_LOG_FORMAT": "text", "TURNSTILE_SIM_MIN_LATENCY": "5ms", "TURNSTILE_SIM_MAX_LATENCY": "20ms",
	}
	for k, v := range extra {
		env[k] = v
	}
	ctx, cancel := context.WithCancel(context.Background())
	var out lockedBuffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"serve"}, streams{in: strings.NewReader(""), out: &out, err: &out}, func(k string) string { return env[k] })
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case code := <-done:
			if code != 0 {
				t.Errorf("serve exited %d:\n%s", code, out.String())
			}
		case <-time.After(2 * time.Minute):
			t.Errorf("serve did not stop in 2 minutes:\n%s", out.String())
		}
	})
	testenv.Eventually(t, 2*time.Minute, "serve to be ready", func() bool {
		select {
		case code := <-done:
			done <- code
			t.Fatalf("serve exited %d:\n%s", code, out.String())
		default:
		}
		resp, err := http.Get("http://" + httpAddr + "/readyz")
		if err != nil {
			return false
		}
		_ = resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	s := &inProcessServe{dir: dir, natsURL: "nats://" + natsAddr, httpURL: "http://" + httpAddr, out: &out, env: map[string]string{
		"TURNSTILE_NATS_URL": "nats://" + natsAddr, "TURNSTILE_DATA_DIR": dir, "TURNSTILE_DATABASE_URL": dbURL,
	}}
	return s
}

// token is the user role's token serve wrote.
func (s *inProcessServe) token(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(s.dir, natsTokenFile))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// connectUser connects with the user role's token and collects the
// server's asynchronous errors (permission violations).
func (s *inProcessServe) connectUser(t *testing.T) (*nats.Conn, jetstream.JetStream, chan error) {
	t.Helper()
	nc, errs := connectWithErrors(t, s.natsURL, nats.Token(s.token(t)))
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js, errs
}

// connectWithErrors connects to url with auth and collects the server's
// asynchronous errors (permission violations). Closed at the end of the
// test.
func connectWithErrors(t *testing.T, url string, auth nats.Option) (*nats.Conn, chan error) {
	t.Helper()
	errs := make(chan error, 256)
	nc, err := nats.Connect(url, auth, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		select {
		case errs <- err:
		default:
		}
	}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc, errs
}

// waitViolation waits for a permission violation naming subject.
func waitViolation(t *testing.T, errs chan error, subject string) {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case err := <-errs:
			if errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(err.Error(), subject) {
				return
			}
		case <-timeout:
			t.Fatalf("no permission violation for %s", subject)
		}
	}
}

// issue 12 item 2: serve's embedded NATS refuses clients without the token
// it wrote to the data dir (0600), so --api-token cannot be bypassed over
// NATS; with the token a client has the user role: the CLI's commands all
// work, but it cannot publish events, outcomes or system reports, subscribe
// to reports, touch serve's consumers, or delete or purge streams.
func TestNATSRoles(t *testing.T) {
	s := startInProcessServe(t, nil)
	info, err := os.Stat(filepath.Join(s.dir, natsTokenFile))
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("token file: %v %v, want mode 0600", info, err)
	}

	t.Run("NoCredentialRefused", func(t *testing.T) {
		for _, opts := range [][]nats.Option{nil, {nats.Token("guess")}, {nats.UserInfo("turnstile-user", "guess")}} {
			nc, err := nats.Connect(s.natsURL, opts...)
			if err == nil {
				nc.Close()
				t.Fatal("connected without the token")
			}
			if !errors.Is(err, nats.ErrAuthorization) {
				t.Fatalf("refusal: %v", err)
			}
		}
		// An nkey: one serve did not make, or serve's own public key with
		// a signature of another key (what a server that skipped the
		// signature check would let in).
		stranger, err := nkeys.CreateUser()
		if err != nil {
			t.Fatal(err)
		}
		strangerPub, _ := stranger.PublicKey()
		for _, f := range []string{"", natsNkeyFile, natsAdminNkeyFile} {
			pub := strangerPub
			if f != "" {
				seed, err := os.ReadFile(filepath.Join(s.dir, f))
				if err != nil {
					t.Fatal(err)
				}
				kp, err := nkeys.ParseDecoratedUserNKey(seed)
				if err != nil {
					t.Fatal(err)
				}
				pub, _ = kp.PublicKey()
			}
			nc, err := nats.Connect(s.natsURL, nats.Nkey(pub, stranger.Sign))
			if err == nil {
				nc.Close()
				t.Fatalf("connected with the nkey %s signed by another key", pub)
			}
			if !errors.Is(err, nats.ErrAuthorization) {
				t.Fatalf("refusal of a foreign signature: %v", err)
			}
		}
		// The token in the URL, as docs/operations.md's `nats` example has it.
		nc, err := nats.Connect(strings.Replace(s.natsURL, "nats://", "nats://"+s.token(t)+"@", 1))
		if err != nil {
			t.Fatalf("the token in the URL: %v", err)
		}
		nc.Close()
		// The CLI, told to look elsewhere for the token, says why.
		env := map[string]string{"TURNSTILE_NATS_URL": s.natsURL, "TURNSTILE_DATA_DIR": t.TempDir()}
		code, _, errs := runCLI(t, env, "delete", "anything")
		if code != exitError || !strings.Contains(errs, "refused this client") {
			t.Fatalf("delete without the token: exit %d\n%s", code, errs)
		}
	})

	t.Run("CLIWorksUnderTheUserRole", func(t *testing.T) {
		for _, args := range [][]string{
			{"create", "roles", "--wait"},
			{"wait", "roles", "--state", "running", "--timeout", "30s"},
			{"get", "roles"},
			{"list"},
			{"history", "roles"},
			{"explain", "roles"},
			{"audit", "roles"},
			{"audit", "--all"},
			{"status"},
			{"restart", "roles", "--wait"},
			{"delete", "roles", "--wait"},
			{"history", "roles", "-o", "json"},
		} {
			code, out, errs := runCLI(t, s.env, args...)
			if code != 0 {
				t.Fatalf("turnstile %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errs)
			}
		}
	})

	t.Run("UserRoleCannotForge", func(t *testing.T) {
		nc, js, errs := s.connectUser(t)
		for _, subject := range []string{"turnstile.evt.victim", "turnstile.out.sys-provision-victim-g1", "turnstile.sys.victim", "$JS.ACK.TURNSTILE_COMMANDS.turnstile-engine-p00.1.1.1.1.0"} {
			if err := nc.Publish(subject, []byte(`{"id":"sys-provision-victim-g1","type":"provision_succeeded","workspace":"victim","generation":1,"container_id":"deadbeef"}`)); err != nil {
				t.Fatal(err)
			}
			waitViolation(t, errs, subject)
		}
		if _, err := nc.Subscribe("turnstile.sys.>", func(*nats.Msg) {}); err != nil {
			t.Fatal(err)
		}
		waitViolation(t, errs, "turnstile.sys.>")
		if _, err := nc.Subscribe("_TURNSTILE_INBOX.>", func(*nats.Msg) {}); err != nil {
			t.Fatal(err)
		}
		waitViolation(t, errs, "_TURNSTILE_INBOX.>")

		inst, err := os.ReadFile(filepath.Join(s.dir, "installation"))
		if err != nil {
			t.Fatal(err)
		}
		worker := workerDurable(strings.TrimSpace(string(inst)))
		// Each refused request times out on the client (the server drops
		// it) and is reported to the connection as a permission violation.
		ctx := context.Background()
		for _, tc := range []struct {
			name, subject string
			do            func(context.Context) error
		}{
			{"DeleteStream", "$JS.API.STREAM.DELETE.TURNSTILE_EVENTS", func(ctx context.Context) error { return js.DeleteStream(ctx, "TURNSTILE_EVENTS") }},
			{"PurgeStream", "$JS.API.STREAM.PURGE.TURNSTILE_EVENTS", func(ctx context.Context) error {
				st, err := js.Stream(ctx, "TURNSTILE_EVENTS")
				if err != nil {
					return err
				}
				return st.Purge(ctx)
			}},
			{"DeleteMsg", "$JS.API.STREAM.MSG.DELETE.TURNSTILE_EVENTS", func(ctx context.Context) error {
				st, err := js.Stream(ctx, "TURNSTILE_EVENTS")
				if err != nil {
					return err
				}
				return st.DeleteMsg(ctx, 1)
			}},
			{"DeleteEngineConsumer", "$JS.API.CONSUMER.DELETE.TURNSTILE_COMMANDS.turnstile-engine-p00", func(ctx context.Context) error {
				return js.DeleteConsumer(ctx, "TURNSTILE_COMMANDS", "turnstile-engine-p00")
			}},
			{"UpdateStream", "$JS.API.STREAM.UPDATE.TURNSTILE_EVENTS", func(ctx context.Context) error {
				_, err := js.UpdateStream(ctx, jetstream.StreamConfig{Name: "TURNSTILE_EVENTS", Subjects: []string{"turnstile.evt.>"}})
				return err
			}},
			{"PullFromTheEngine", "$JS.API.CONSUMER.MSG.NEXT.TURNSTILE_COMMANDS.turnstile-engine-p00", func(ctx context.Context) error {
				return nc.PublishRequest("$JS.API.CONSUMER.MSG.NEXT.TURNSTILE_COMMANDS.turnstile-engine-p00", nc.NewRespInbox(), []byte(`{"batch":1}`))
			}},
			{"RedefineTheEngine", "$JS.API.CONSUMER.CREATE.TURNSTILE_SYSTEM.turnstile-engine-p00", func(ctx context.Context) error {
				_, err := js.CreateOrUpdateConsumer(ctx, "TURNSTILE_SYSTEM", jetstream.ConsumerConfig{Durable: "turnstile-engine-p00", FilterSubject: "turnstile.sys.0.nothing"})
				return err
			}},
			{"PullFromTheWorker", "$JS.API.CONSUMER.MSG.NEXT.TURNSTILE_EVENTS." + worker, func(ctx context.Context) error {
				return nc.PublishRequest("$JS.API.CONSUMER.MSG.NEXT.TURNSTILE_EVENTS."+worker, nc.NewRespInbox(), []byte(`{"batch":1}`))
			}},
			{"RedefineTheWorker", "$JS.API.CONSUMER.CREATE.TURNSTILE_EVENTS." + worker, func(ctx context.Context) error {
				_, err := js.CreateOrUpdateConsumer(ctx, "TURNSTILE_EVENTS", jetstream.ConsumerConfig{Durable: worker, FilterSubject: "turnstile.evt.nothing"})
				return err
			}},
			// A review found these: a push consumer whose deliver subject is
			// an event subject writes any message, headers and all, into
			// the event stream; an update of serve's ordered consumers (the
			// supervisor's) blinds them; a durable of one's own cannot be
			// deleted again. The user role creates no consumer at all.
			{"PushConsumerIntoEvents", "$JS.API.CONSUMER.CREATE.TURNSTILE_COMMANDS", func(ctx context.Context) error {
				req := `{"stream_name":"TURNSTILE_COMMANDS","config":{"deliver_subject":"turnstile.evt.zz","ack_policy":"none","deliver_policy":"all"}}`
				return nc.PublishRequest("$JS.API.CONSUMER.CREATE.TURNSTILE_COMMANDS", nc.NewRespInbox(), []byte(req))
			}},
			{"DurableOfOnesOwn", "$JS.API.CONSUMER.CREATE.TURNSTILE_EVENTS.evil", func(ctx context.Context) error {
				_, err := js.CreateOrUpdateConsumer(ctx, "TURNSTILE_EVENTS", jetstream.ConsumerConfig{Durable: "evil"})
				return err
			}},
			{"OrderedConsumer", "$JS.API.CONSUMER.CREATE.TURNSTILE_EVENTS.", func(ctx context.Context) error {
				c, err := js.OrderedConsumer(ctx, "TURNSTILE_EVENTS", jetstream.OrderedConsumerConfig{})
				if err != nil {
					return err
				}
				_, err = c.Info(ctx)
				return err
			}},
			{"PublishReportThroughJetStream", "turnstile.sys.victim", func(ctx context.Context) error {
				_, err := js.Publish(ctx, "turnstile.sys.victim", []byte(`{}`))
				return err
			}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
				defer cancel()
				_ = tc.do(ctx)
				waitViolation(t, errs, tc.subject)
			})
		}
		// The admin role (its own nkey file, 0600) may make the
		// consumer rebuild reads through; the user role cannot.
		info, err := os.Stat(filepath.Join(s.dir, natsAdminNkeyFile))
		if err != nil || info.Mode().Perm() != 0o600 {
			t.Fatalf("admin nkey file: %v %v, want mode 0600", info, err)
		}
		if code, out, errOut := runCLI(t, s.env, "rebuild"); code != 0 {
			t.Fatalf("rebuild under the admin role: exit %d\n%s%s", code, out, errOut)
		}
		// Everything is still there: the workspace's history and the audit.
		code, out, errOut := runCLI(t, s.env, "audit", "--all")
		if code != 0 || !strings.Contains(out, "OK") {
			t.Fatalf("audit --all after the attempts: exit %d\n%s%s", code, out, errOut)
		}
		code, out, errOut = runCLI(t, s.env, "history", "roles")
		if code != 0 || !strings.Contains(out, "deleted") {
			t.Fatalf("history after the attempts: exit %d\n%s%s", code, out, errOut)
		}
	})
}

// TestNATSListenAnyPort: --nats-listen host:0 listens on a free port, as
// --http-addr does (nats-server alone would take 0 as 4222), and
// nats-url names it.
func TestNATSListenAnyPort(t *testing.T) {
	s := startInProcessServe(t, map[string]string{"TURNSTILE_NATS_LISTEN": "127.0.0.1:0"})
	b, err := os.ReadFile(filepath.Join(s.dir, natsURLFile))
	if err != nil {
		t.Fatal(err)
	}
	u := strings.TrimSpace(string(b))
	if !strings.HasPrefix(u, "nats://127.0.0.1:") || strings.HasSuffix(u, ":4222") || strings.HasSuffix(u, ":0") {
		t.Fatalf("nats-url %q: want a free port on 127.0.0.1, not 0 or 4222", u)
	}
	s.natsURL = u
	nc, _, _ := s.connectUser(t)
	if nc.ConnectedServerName() != "turnstile" {
		t.Fatalf("connected to %q at %s, want serve's embedded server", nc.ConnectedServerName(), u)
	}
}

// TestAdminCannotClaimPartitions: the admin role may make consumers of its
// own (rebuild's), but not the partitions claim, whose create decides the P
// of streams made before partitions (events.PartitionsClaim), nor serve's
// other durables.
func TestAdminCannotClaimPartitions(t *testing.T) {
	n := events.NewNames("")
	_, admin := rolePermissions(n, serveDurables(n, "inst"))
	for _, subject := range []string{
		"$JS.API.CONSUMER.CREATE." + n.CommandStream() + "." + events.PartitionsClaim,
		"$JS.API.CONSUMER.CREATE." + n.CommandStream() + ".turnstile-engine-p63",
		"$JS.API.CONSUMER.CREATE." + n.EventStream() + "." + workerDurable("inst"),
	} {
		if !slices.Contains(admin.Publish.Deny, subject) {
			t.Errorf("the admin role may publish %s", subject)
		}
	}
}

// TestAdminCannotRedefineServeConsumers: the admin role's deny list names
// serve's durables in the subject, but the legacy create subject
// $JS.API.CONSUMER.CREATE.<stream> carries the consumer's name in the
// request alone, and the server creates or updates the consumer of that
// name: the engine's partition consumer given a filter that matches
// nothing, its workspaces' commands were never decided again. The admin
// role creates only through the subjects that name the consumer (the
// server then takes the name from the subject).
func TestAdminCannotRedefineServeConsumers(t *testing.T) {
	s := startInProcessServe(t, nil)
	admin, err := nats.NkeyOptionFromSeed(filepath.Join(s.dir, natsAdminNkeyFile))
	if err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 64)
	anc, err := nats.Connect(s.natsURL, admin, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		select {
		case errs <- err:
		default:
		}
	}))
	if err != nil {
		t.Fatal(err)
	}
	defer anc.Close()
	_, js, _ := s.connectUser(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	filter := func() string {
		c, err := js.Consumer(ctx, "TURNSTILE_COMMANDS", "turnstile-engine-p00")
		if err != nil {
			t.Fatal(err)
		}
		cfg := c.CachedInfo().Config
		return cfg.FilterSubject + strings.Join(cfg.FilterSubjects, " ")
	}
	before := filter()
	for _, req := range []string{
		`{"stream_name":"TURNSTILE_COMMANDS","config":{"name":"turnstile-engine-p00","filter_subject":"turnstile.cmd.0.nothing","ack_policy":"explicit"}}`,
		`{"stream_name":"TURNSTILE_COMMANDS","config":{"name":"turnstile-engine-p00","filter_subject":"turnstile.cmd.0.nothing","ack_policy":"explicit"},"action":"update"}`,
	} {
		if err := anc.PublishRequest("$JS.API.CONSUMER.CREATE.TURNSTILE_COMMANDS", anc.NewRespInbox(), []byte(req)); err != nil {
			t.Fatal(err)
		}
	}
	if err := anc.Flush(); err != nil {
		t.Fatal(err)
	}
	// The server answers at once: a change not seen in 5 seconds was not made.
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		if after := filter(); after != before {
			t.Fatalf("the admin role redefined the engine's consumer turnstile-engine-p00: filter %q, was %q", after, before)
		}
	}
	waitViolation(t, errs, "$JS.API.CONSUMER.CREATE.TURNSTILE_COMMANDS")
	// Through a subject naming a consumer of its own, the name in the
	// request is not the one the server takes.
	resp, err := anc.Request("$JS.API.CONSUMER.CREATE.TURNSTILE_COMMANDS.mine",
		[]byte(`{"stream_name":"TURNSTILE_COMMANDS","config":{"name":"turnstile-engine-p00","filter_subject":"turnstile.cmd.0.nothing","ack_policy":"none"}}`), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(resp.Data), `"name":"mine"`) {
		t.Fatalf("a named create: %s", resp.Data)
	}
	if after := filter(); after != before {
		t.Fatalf("the admin role redefined the engine's consumer turnstile-engine-p00: filter %q, was %q", after, before)
	}
}
