package api_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/turnstile-dev/turnstile/api"
	"github.com/turnstile-dev/turnstile/client"
	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/internal/testenv"
)

// TestCommandWhileNATSIsAway: a command sent while NATS is away is
// answered 503 well within the command timeout, and names the id under
// which a repeat is the same command: a try of its publish may have been
// stored before NATS stopped answering, and a repeat under a new id would
// then be a second command. The 503 used to say only "retry".
func TestCommandWhileNATSIsAway(t *testing.T) {
	// The streams alone: no engine is needed to see the publish fail.
	ns := testenv.StartNATS(t, testenv.NATSOptions{})
	// As serve's API connects with --nats-url: nothing buffered across a
	// reconnect.
	nc, err := nats.Connect(ns.URL, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond), nats.ReconnectBufSize(-1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if err := events.EnsureStreams(ctx, js, events.NewNames(""), events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	cl, err := client.New(ctx, nc, client.Options{Actor: "api", ActorKey: make([]byte, events.ActorKeySize)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cl.Close() })
	s, err := api.New(api.Config{Client: cl, Store: cl.Store(), NC: nc, Provisioner: "sim", Logger: testenv.Logger(t),
		Tokens: []api.Token{{Name: testTokenName, Secret: testToken}}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)

	ns.Shutdown()
	req, err := http.NewRequest(http.MethodPost, srv.URL+"/v1/workspaces/away/stop", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+testToken)
	// Well below the command timeout (30 s), which a publish lost with
	// the connection used to wait out.
	resp, err := (&http.Client{Timeout: 20 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	var b api.ErrorBody
	if err := json.NewDecoder(resp.Body).Decode(&b); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusServiceUnavailable || b.Code != api.CodeUnavailable {
		t.Fatalf("a stop while NATS is away: %d %+v, want 503 unavailable", resp.StatusCode, b)
	}
	if fsm.ValidateUserCommandID(b.CommandID) != nil || b.Command != fsm.Stop ||
		!strings.Contains(b.Message, api.IdempotencyHeader+": "+b.CommandID) {
		t.Fatalf("the 503 does not name the command's id for a repeat: %+v", b)
	}
}
