package apiclient_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"go.uber.org/goleak"

	"github.com/turnstile-dev/turnstile/api"
	"github.com/turnstile-dev/turnstile/apiclient"
	"github.com/turnstile-dev/turnstile/client"
	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/internal/testenv"
	"github.com/turnstile-dev/turnstile/migrations"
	"github.com/turnstile-dev/turnstile/projector"
	"github.com/turnstile-dev/turnstile/read"
	"github.com/turnstile-dev/turnstile/webhook"
)

var pg *testenv.Postgres

func TestMain(m *testing.M) { goleak.VerifyTestMain(testenv.MainWithPostgres(m, &pg)) }

const token = "apiclient-test-token-0123456789abcdefghijkl"

// stack is a real API server on NATS, an engine, a projected read model,
// and a system client that plays the provisioner.
type stack struct {
	srv    *httptest.Server
	system *client.Client
	c      *apiclient.Client
}

// newStack starts the stack; configure, when given, changes the API's
// configuration.
func newStack(t *testing.T, configure ...func(*api.Config)) *stack {
	t.Helper()
	core := testenv.StartCore(t, testenv.CoreOptions{})
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, pg.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	db := stdlib.OpenDBFromPool(pool)
	if err := migrations.Up(ctx, db); err != nil {
		t.Fatal(err)
	}
	_ = db.Close()
	p, err := projector.New(projector.Config{Store: core.Store, Pool: pool, BatchWait: time.Millisecond, Logger: testenv.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	pctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { _ = p.Run(pctx) })
	t.Cleanup(func() { cancel(); wg.Wait() })
	hooks, err := webhook.OpenRegistry(ctx, core.JS, core.Store, webhook.RegistryOptions{Memory: true})
	if err != nil {
		t.Fatal(err)
	}
	cfg := api.Config{Client: core.APIClient(t), Store: core.Store, NC: core.NC, Pool: pool,
		Tokens: []api.Token{{Name: "tester", Secret: token}}, PollInterval: 20 * time.Millisecond,
		KeepAlive: 100 * time.Millisecond, Webhooks: hooks, Logger: testenv.Logger(t)}
	for _, f := range configure {
		f(&cfg)
	}
	s, err := api.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	st := &stack{srv: httptest.NewServer(s.Handler()), system: core.SystemClient(t, "test-provisioner")}
	t.Cleanup(st.srv.Close)
	if st.c, err = apiclient.New(st.srv.URL, token, nil); err != nil {
		t.Fatal(err)
	}
	return st
}

func (st *stack) report(t *testing.T, id string, typ fsm.CommandType, gen uint64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if o, err := st.system.Send(ctx, fsm.Command{Type: typ, Workspace: id, Generation: gen, Reason: "test"}); err != nil || o.Outcome != fsm.Accepted {
		t.Fatalf("%s %s: %+v %v", typ, id, o, err)
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestClient(t *testing.T) {
	st := newStack(t)
	ctx := ctxT(t)

	t.Run("SendAccepted", func(t *testing.T) {
		res, err := st.c.Send(ctx, fsm.Command{ID: "create-a-1", Type: fsm.Create, Workspace: "a"})
		if err != nil || res.Outcome != fsm.Accepted || res.State != "provisioning" || res.Generation != 1 || res.EventSeq != 1 {
			t.Fatalf("create: %+v %v", res, err)
		}
		again, err := st.c.Send(ctx, fsm.Command{ID: "create-a-1", Type: fsm.Create, Workspace: "a"})
		if err != nil || again.CommandID != "create-a-1" || again.EventSeq != 1 {
			t.Fatalf("the same key again: %+v %v, want the first outcome", again, err)
		}
	})

	t.Run("SendRefused", func(t *testing.T) {
		res, err := st.c.Send(ctx, fsm.Command{Type: fsm.Restart, Workspace: "a"})
		if err != nil || res.Outcome != fsm.Rejected || res.Rejection == nil || res.Rejection.Code != fsm.CodeBusy ||
			res.Rejection.State != fsm.Provisioning || res.Rejection.Generation != 1 || len(res.Rejection.Allowed) == 0 {
			t.Fatalf("restart while provisioning: %+v %v", res, err)
		}
		res, err = st.c.Send(ctx, fsm.Command{Type: fsm.Start, Workspace: "nobody"})
		if err != nil || res.Rejection == nil || res.Rejection.Code != fsm.CodeNotFound || res.Rejection.State != fsm.None {
			t.Fatalf("start of an unknown workspace: %+v %v", res, err)
		}
		_, err = st.c.Send(ctx, fsm.Command{ID: "create-a-1", Type: fsm.Stop, Workspace: "a"})
		var e *apiclient.Error
		if !errors.As(err, &e) || e.Body.Code != api.CodeIDReused {
			t.Fatalf("a key another command used: %v", err)
		}
	})

	t.Run("Cluster", func(t *testing.T) {
		rep, err := st.c.Cluster(ctx)
		if err != nil || len(rep.Nodes) == 0 || len(rep.Streams) != 3 || len(rep.Partitions) == 0 || len(rep.Engines) != 1 {
			t.Fatalf("cluster: %+v %v; want the server, the three streams, the partitions and the engine", rep, err)
		}
	})

	t.Run("WrongToken", func(t *testing.T) {
		c, err := apiclient.New(st.srv.URL, strings.Repeat("x", 40), nil)
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.Get(ctx, "a")
		var e *apiclient.Error
		if !errors.As(err, &e) || e.Status != http.StatusUnauthorized || !strings.Contains(err.Error(), "--api-token") {
			t.Fatalf("a wrong token: %v", err)
		}
	})

	t.Run("Unreachable", func(t *testing.T) {
		gone := httptest.NewServer(http.NotFoundHandler())
		gone.Close()
		c, err := apiclient.New(gone.URL, token, nil)
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.Get(ctx, "a")
		var ue *apiclient.UnreachableError
		if !errors.As(err, &ue) || ue.URL != gone.URL || !strings.HasPrefix(err.Error(), "cannot reach the API at "+gone.URL) {
			t.Fatalf("a serve that is gone: %v, want an UnreachableError of %s", err, gone.URL)
		}
	})

	t.Run("Webhooks", func(t *testing.T) {
		t.Run("Create", func(t *testing.T) {
			h, err := st.c.CreateWebhook(ctx, api.WebhookRequest{URL: "https://hooks.example.com/a", Events: []fsm.EventType{fsm.Created}})
			if err != nil || webhook.ValidateID(h.ID) != nil || !strings.HasPrefix(h.Secret, "whsec_") ||
				h.URL != "https://hooks.example.com/a" || len(h.Events) != 1 || h.Events[0] != fsm.Created {
				t.Fatalf("create: %+v %v", h, err)
			}
			list, err := st.c.ListWebhooks(ctx)
			if err != nil || len(list) != 1 || list[0].ID != h.ID || list[0].URL != h.URL {
				t.Fatalf("list after create: %+v %v", list, err)
			}
			if err := st.c.DeleteWebhook(ctx, h.ID); err != nil {
				t.Fatalf("delete: %v", err)
			}
			if list, err := st.c.ListWebhooks(ctx); err != nil || len(list) != 0 {
				t.Fatalf("list after delete: %+v %v", list, err)
			}
		})
		t.Run("ErrInvalid", func(t *testing.T) {
			_, err := st.c.CreateWebhook(ctx, api.WebhookRequest{URL: "ftp://hooks.example.com/a"})
			var e *apiclient.Error
			if !errors.As(err, &e) || e.Status != http.StatusBadRequest || e.Code() != fsm.CodeInvalid || e.Body.Field != "url" {
				t.Fatalf("create with an ftp URL: %v, want a 400 invalid of url", err)
			}
		})
		t.Run("ErrNotFound", func(t *testing.T) {
			err := st.c.DeleteWebhook(ctx, "wh-0123456789abcdef")
			var e *apiclient.Error
			if !errors.As(err, &e) || e.Status != http.StatusNotFound || e.Code() != fsm.CodeNotFound {
				t.Fatalf("delete of an unknown webhook: %v, want a 404 not_found", err)
			}
		})
	})

	t.Run("Reads", func(t *testing.T) {
		if _, err := st.c.Get(ctx, "nobody"); !errors.Is(err, read.ErrNoWorkspace) {
			t.Fatalf("get of an unknown workspace: %v", err)
		}
		if _, err := st.c.History(ctx, "nobody"); !errors.Is(err, read.ErrNoWorkspace) {
			t.Fatalf("history of an unknown workspace: %v", err)
		}
		for _, id := range []string{"b", "c", "d"} {
			if _, err := st.c.Send(ctx, fsm.Command{Type: fsm.Create, Workspace: id}); err != nil {
				t.Fatal(err)
			}
		}
		testenv.Eventually(t, 10*time.Second, "the read model lists 4", func() bool {
			l, err := st.c.List(ctx, read.ListOptions{})
			return err == nil && len(l.Workspaces) == 4
		})
		l, err := st.c.List(ctx, read.ListOptions{Limit: 3})
		if err != nil || len(l.Workspaces) != 3 || l.Next != "c" {
			t.Fatalf("a page of 3: %+v %v", l, err)
		}
		l, err = st.c.List(ctx, read.ListOptions{After: l.Next, Status: fsm.Provisioning})
		if err != nil || len(l.Workspaces) != 1 || l.Workspaces[0].ID != "d" || l.Next != "" {
			t.Fatalf("the page after c: %+v %v", l, err)
		}
	})

	t.Run("Wait", func(t *testing.T) {
		res, err := st.c.Wait(ctx, "a", fsm.Running, 1, 200*time.Millisecond)
		if err != nil || res.Reached || res.Code != api.CodeTimeout || res.State != "provisioning" {
			t.Fatalf("a wait that times out: %+v %v", res, err)
		}
		st.report(t, "a", fsm.ProvisionSucceeded, 1)
		res, err = st.c.Wait(ctx, "a", fsm.Running, 1, 10*time.Second)
		if err != nil || !res.Reached || res.State != "running" || res.EventSeq != 2 {
			t.Fatalf("a wait that is reached: %+v %v", res, err)
		}
		if _, err := st.c.Wait(ctx, "nobody", fsm.Running, 0, time.Second); !errors.Is(err, read.ErrNoWorkspace) {
			t.Fatalf("a wait for an unknown workspace: %v", err)
		}
	})
}

// TestFollowResumes cuts a follow stream's connection: Follow reconnects
// with Last-Event-ID and hands on every event once, in order.
func TestFollowResumes(t *testing.T) {
	st := newStack(t)
	ctx, cancel := context.WithCancel(ctxT(t))
	defer cancel()
	if _, err := st.c.Send(ctx, fsm.Command{Type: fsm.Create, Workspace: "f"}); err != nil {
		t.Fatal(err)
	}
	got := make(chan api.Event, 16)
	var retries atomic.Int32
	done := make(chan error, 1)
	go func() {
		done <- st.c.FollowWorkspace(ctx, "f", 0, apiclient.FollowOptions{
			OnRetry: func(error, time.Duration) { retries.Add(1) }, MaxBackoff: 100 * time.Millisecond,
		}, func(ev api.Event) error { got <- ev; return nil })
	}()
	next := func() api.Event {
		t.Helper()
		select {
		case ev := <-got:
			return ev
		case err := <-done:
			t.Fatalf("the follow ended: %v", err)
		case <-ctx.Done():
			t.Fatal("no event")
		}
		return api.Event{}
	}
	if ev := next(); ev.Seq != 1 || ev.Type != fsm.Created {
		t.Fatalf("first event: %+v", ev)
	}
	st.srv.CloseClientConnections()
	testenv.Eventually(t, 10*time.Second, "the follow notices the cut", func() bool { return retries.Load() > 0 })
	st.report(t, "f", fsm.ProvisionSucceeded, 1)
	if ev := next(); ev.Seq != 2 || ev.Type != fsm.Provisioned || ev.From != "provisioning" || ev.To != "running" {
		t.Fatalf("the event after the cut: %+v (event 1 again would mean no resume)", ev)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("the follow ended with %v at its context's end, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the follow did not end with its context")
	}
	if _, err := st.c.Send(context.Background(), fsm.Command{Type: fsm.Stop, Workspace: "f"}); err != nil {
		t.Fatal(err)
	}
	select {
	case ev := <-got:
		t.Fatalf("an event after the follow ended: %+v", ev)
	default:
	}
}

// TestFollowUnknown: a stream of a workspace that does not exist ends at
// once with read.ErrNoWorkspace, not in a reconnect loop.
func TestFollowUnknown(t *testing.T) {
	st := newStack(t)
	err := st.c.FollowWorkspace(ctxT(t), "ghost", 0, apiclient.FollowOptions{}, func(api.Event) error { return nil })
	if !errors.Is(err, read.ErrNoWorkspace) {
		t.Fatalf("follow of an unknown workspace: %v", err)
	}
}
