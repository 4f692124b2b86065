package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/turnstile-dev/turnstile/api"
	"github.com/turnstile-dev/turnstile/client"
	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/internal/testenv"
	"github.com/turnstile-dev/turnstile/migrations"
	"github.com/turnstile-dev/turnstile/projector"
)

var pg *testenv.Postgres

func TestMain(m *testing.M) { goleak.VerifyTestMain(testenv.MainWithPostgres(m, &pg)) }

// env is one test's core (NATS, streams, engine), read model with a running
// projector, and API server.
type env struct {
	core   *testenv.Core
	system *client.Client // plays the provisioner: sends outcomes
	pool   *pgxpool.Pool
	srv    *httptest.Server
	api    *api.Server
	token  string
	reg    *prometheus.Registry
	// openapi validates every exchange against api/openapi.json; a
	// mismatch fails the test that made the env.
	openapi *openAPIChecker
	t       *testing.T
}

// testToken is the token every env's API accepts, named testTokenName.
const (
	testToken     = "test-token-0123456789abcdefghijklmnopqrstuvwxyz"
	testTokenName = "tester"
)

type envOptions struct {
	// tokens are accepted besides testToken.
	tokens      []api.Token
	noReadModel bool
	// configure, when set, changes the API's configuration.
	configure func(*api.Config)
}

func newEnv(t *testing.T, o envOptions) *env {
	t.Helper()
	e := &env{core: testenv.StartCore(t, testenv.CoreOptions{}), token: testToken, openapi: newOpenAPIChecker(t), t: t}
	e.system = e.core.SystemClient(t, "test-provisioner")
	reg := prometheus.NewRegistry()
	e.reg = reg
	cfg := api.Config{Client: e.core.APIClient(t), Store: e.core.Store, NC: e.core.NC,
		Tokens:      append([]api.Token{{Name: testTokenName, Secret: testToken}}, o.tokens...),
		Provisioner: "sim", PollInterval: 20 * time.Millisecond, Gatherer: reg, Registerer: reg, Logger: testenv.Logger(t)}
	if !o.noReadModel {
		e.pool = startReadModel(t, e.core)
		cfg.Pool = e.pool
		reg.MustRegister(api.NewWorkspaceCollector(e.pool, testenv.Logger(t)))
	}
	if o.configure != nil {
		o.configure(&cfg)
	}
	s, err := api.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.api = s
	e.srv = httptest.NewServer(s.Handler())
	t.Cleanup(e.srv.Close)
	return e
}

// startReadModel creates a database, migrates it and runs a projector on it
// until the test ends.
func startReadModel(t *testing.T, core *testenv.Core) *pgxpool.Pool {
	t.Helper()
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, pg.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	db := stdlib.OpenDBFromPool(pool)
	defer db.Close()
	if err := migrations.Up(ctx, db); err != nil {
		t.Fatal(err)
	}
	p, err := projector.New(projector.Config{Store: core.Store, Pool: pool, BatchWait: time.Millisecond, Logger: testenv.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	pctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { _ = p.Run(pctx) })
	t.Cleanup(func() { cancel(); wg.Wait() })
	return pool
}

// response is one HTTP answer.
type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) decode(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decode %s: %v", r.body, err)
	}
}

func (r response) errorBody(t *testing.T) api.ErrorBody {
	t.Helper()
	var b api.ErrorBody
	r.decode(t, &b)
	return b
}

// do sends a request with the env's token (if any), Content-Type
// application/json when it has a body, and the given headers ("Key",
// "value" pairs, which may override both), failing the test on a
// transport error.
func (e *env) do(t *testing.T, method, path, body string, headers ...string) response {
	t.Helper()
	r, err := e.try(method, path, body, headers...)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// try is do without a test, for other goroutines.
func (e *env) try(method, path, body string, headers ...string) (response, error) {
	return e.tryCtx(context.Background(), method, path, body, headers...)
}

// tryCtx is try under ctx. A "Host" header sets the request's Host.
func (e *env) tryCtx(ctx context.Context, method, path, body string, headers ...string) (response, error) {
	var rd io.Reader
	if body != "" {
		rd = bytes.NewBufferString(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, e.srv.URL+path, rd)
	if err != nil {
		return response{}, err
	}
	if e.token != "" {
		req.Header.Set("Authorization", "Bearer "+e.token)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		if headers[i] == "Host" {
			req.Host = headers[i+1]
			continue
		}
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		return response{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return response{}, err
	}
	if err := e.openapi.check(req, []byte(body), resp, b); err != nil {
		e.t.Error(err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: b}, nil
}

func (e *env) wantStatus(t *testing.T, r response, want int) {
	t.Helper()
	if r.status != want {
		t.Fatalf("status %d, want %d: %s", r.status, want, r.body)
	}
}

// create creates id over HTTP and checks it was accepted.
func (e *env) create(t *testing.T, id string) api.CommandResult {
	t.Helper()
	r := e.do(t, "POST", "/v1/workspaces", `{"id":"`+id+`"}`)
	e.wantStatus(t, r, http.StatusAccepted)
	var res api.CommandResult
	r.decode(t, &res)
	return res
}

// report sends a system outcome, as the provisioner would.
func (e *env) report(t *testing.T, id string, typ fsm.CommandType, gen uint64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	o, err := e.system.Send(ctx, fsm.Command{Type: typ, Workspace: id, Generation: gen, Reason: "test"})
	if err != nil || o.Outcome != fsm.Accepted {
		t.Fatalf("%s %s gen %d: %+v %v", typ, id, gen, o, err)
	}
}

// publishRaw stores cmd on its workspace's command subject as a plain NATS
// client would, past the API (no proof of its actor), under its id as
// Nats-Msg-Id.
func (e *env) publishRaw(t *testing.T, cmd fsm.Command) {
	t.Helper()
	data, err := events.EncodeCommand(cmd)
	if err != nil {
		t.Fatal(err)
	}
	m := nats.NewMsg(events.NewNames("").Command(cmd.Workspace))
	m.Data = data
	m.Header.Set(jetstream.MsgIDHeader, cmd.ID)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := e.core.JS.PublishMsg(ctx, m); err != nil {
		t.Fatal(err)
	}
}
