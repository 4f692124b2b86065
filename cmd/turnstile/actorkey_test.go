package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/turnstile-dev/turnstile/api"
	"github.com/turnstile-dev/turnstile/client"
	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/internal/testenv"
)

// TestAPIActorOverNATS: a holder of the NATS user role used to record its
// commands as the HTTP API's ("api:default"): they reach the engine on the
// same subjects. Now the API proves its actors under the installation's
// actor key, which the user role cannot read, and the engine refuses the
// unproven one; the API's own commands keep their actor.
func TestAPIActorOverNATS(t *testing.T) {
	s := startInProcessServe(t, nil)
	// Without a NATS URL the CLI speaks to the API (the data dir's api-url).
	overHTTP := map[string]string{"TURNSTILE_DATA_DIR": s.dir}
	if code, out, errs := runCLI(t, overHTTP, "create", "victim", "--wait"); code != 0 {
		t.Fatalf("create over HTTP: exit %d\n%s%s", code, out, errs)
	}
	nc, js, errs := s.connectUser(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cl, err := client.New(ctx, nc, client.Options{Actor: "api:default"})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	o, err := cl.Send(ctx, fsm.Command{Type: fsm.Stop, Workspace: "victim"})
	if err != nil {
		t.Fatal(err)
	}
	if o.Outcome != fsm.Rejected || o.Rejection == nil || o.Rejection.Code != fsm.CodeInvalid ||
		!strings.Contains(o.Rejection.Message, "HTTP API's") || o.EventSeq != 0 {
		t.Fatalf("a NATS user's stop as api:default: %+v %+v", o, o.Rejection)
	}
	code, out, stderr := runCLI(t, s.env, "history", "victim")
	if code != 0 || !strings.Contains(out, "api:default") || strings.Contains(out, "stop") {
		t.Fatalf("history: exit %d\n%s%s", code, out, stderr)
	}
	// The key is serve's alone.
	subject := "$JS.API.STREAM.INFO.KV_" + keysBucket(events.NewNames(""))
	// The server denies the request and never answers it: a short wait.
	kctx, kcancel := context.WithTimeout(ctx, 2*time.Second)
	defer kcancel()
	if _, err := js.KeyValue(kctx, keysBucket(events.NewNames(""))); err == nil {
		t.Fatal("the user role opened the keys bucket")
	}
	waitViolation(t, errs, subject)
}

// TestAPICommandsLandFresh: the engine decides the API's actor only for a
// command stored within the duplicate window of its proof, so a command
// the API sends must never land later than that. With --nats-url, the
// API's connection used to buffer a publish made while NATS was away and
// send it on reconnect, however long after: a command the caller was told
// had failed landed with its old proof, and after an outage longer than
// the window it was refused as forged, under the caller's Idempotency-Key,
// so its retry got "invalid" too (found in review: the command here
// landed with its proof older than the outage). Now the API's publishes
// fail while NATS is away, and each try carries a proof of its own time.
func TestAPICommandsLandFresh(t *testing.T) {
	// An external nats-server that comes back as itself (port, store).
	const token = "external-token-0123456789abcdefghijklmnop"
	opts := &server.Options{Host: "127.0.0.1", Port: testenv.FreePort(t), JetStream: true, StoreDir: t.TempDir(),
		Authorization: token, NoSigs: true, NoLog: true}
	var ns *server.Server
	start := func() {
		t.Helper()
		var err error
		if ns, err = server.NewServer(opts); err != nil {
			t.Fatal(err)
		}
		ns.Start()
		if !ns.ReadyForConnections(30 * time.Second) {
			t.Fatal("nats-server did not become ready in 30s")
		}
	}
	stop := func() { ns.Shutdown(); ns.WaitForShutdown() }
	start()
	t.Cleanup(func() { stop() })
	url := fmt.Sprintf("nats://127.0.0.1:%d", opts.Port)
	s := startInProcessServe(t, map[string]string{"TURNSTILE_NATS_URL": url, "TURNSTILE_NATS_TOKEN": token})
	tok, err := os.ReadFile(filepath.Join(s.dir, apiTokenFile))
	if err != nil {
		t.Fatal(err)
	}
	post := func(timeout time.Duration, path, key, body string) (int, error) {
		t.Helper()
		req, err := http.NewRequest(http.MethodPost, s.httpURL+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
		req.Header.Set("Content-Type", "application/json")
		if key != "" {
			req.Header.Set(api.IdempotencyHeader, key)
		}
		resp, err := (&http.Client{Timeout: timeout}).Do(req)
		if err != nil {
			return 0, err
		}
		_ = resp.Body.Close()
		return resp.StatusCode, nil
	}
	const ws = "outage"
	if code, err := post(time.Minute, "/v1/workspaces", "create-"+ws, `{"id":"`+ws+`"}`); err != nil || code != http.StatusAccepted {
		t.Fatalf("create: %d %v", code, err)
	}

	// NATS goes away for 2 s, or until a stop sent meanwhile is answered
	// (its publish retries for about 1.5 s, after a first try lost with
	// the connection for up to 2 s), whichever is longer. The stop's
	// timeout is well below the API's command timeout (30 s), which its
	// publish used to wait out when that first try was lost (under load).
	stop()
	outage := time.Now()
	stopCode, stopErr := post(20*time.Second, "/v1/workspaces/"+ws+"/stop", "", "")
	time.Sleep(time.Until(outage.Add(2 * time.Second))) // the outage's length, not a wait for anything
	start()
	// A command sent after the outage is decided: serve is back.
	testenv.Eventually(t, time.Minute, "a restart after the outage to be decided", func() bool {
		code, err := post(10*time.Second, "/v1/workspaces/"+ws+"/restart", "restart-after-outage", "")
		return err == nil && code < 500
	})

	nc, err := nats.Connect(url, nats.Token(token))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	names := events.NewNames("")
	cons, err := js.OrderedConsumer(ctx, names.CommandStream(), jetstream.OrderedConsumerConfig{FilterSubjects: []string{names.StoredCommands(ws)}})
	if err != nil {
		t.Fatal(err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.NumPending < 2 {
		t.Fatalf("%d commands of %s stored, want the create and the restart at least", info.NumPending, ws)
	}
	for range info.NumPending {
		m, err := cons.Next(jetstream.FetchMaxWait(10 * time.Second))
		if err != nil {
			t.Fatal(err)
		}
		md, err := m.Metadata()
		if err != nil {
			t.Fatal(err)
		}
		proof := m.Headers().Get(events.ActorProofHeader)
		ms, _, _ := strings.Cut(proof, ".")
		at, err := strconv.ParseInt(ms, 10, 64)
		if err != nil {
			t.Fatalf("command %s carries proof %q", m.Headers().Get(jetstream.MsgIDHeader), proof)
		}
		// Before, the buffered stop landed at the end of the outage, 2 s
		// or more after its proof.
		if gap := md.Timestamp.Sub(time.UnixMilli(at)).Abs(); gap > 1500*time.Millisecond {
			t.Errorf("command %s landed %v after its proof was made: an outage longer than the duplicate window would have it refused as forged",
				m.Headers().Get(jetstream.MsgIDHeader), gap.Round(time.Millisecond))
		}
	}
	// The caller learnt at once that NATS was away.
	if stopErr != nil || stopCode != http.StatusServiceUnavailable {
		t.Errorf("a stop while NATS was away: %d %v, want 503", stopCode, stopErr)
	}
}

// TestServeStopsCleanlyWhileNATSIsAway: with --nats-url, serve stopped
// while NATS is away closes its connections (there is nothing to drain
// them to) and exits 0. It exited 1 ("stop NATS connection projector:
// nats: connection reconnecting"), found as a flake of
// TestAPICommandsLandFresh, whose serve stopped just after an outage.
func TestServeStopsCleanlyWhileNATSIsAway(t *testing.T) {
	const token = "external-token-0123456789abcdefghijklmnop"
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: testenv.FreePort(t), JetStream: true, StoreDir: t.TempDir(),
		Authorization: token, NoSigs: true, NoLog: true})
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	if !ns.ReadyForConnections(30 * time.Second) {
		t.Fatal("nats-server did not become ready in 30s")
	}
	t.Cleanup(ns.Shutdown)
	s := startInProcessServe(t, map[string]string{"TURNSTILE_NATS_URL": ns.ClientURL(), "TURNSTILE_NATS_TOKEN": token})
	ns.Shutdown()
	ns.WaitForShutdown()
	// serve's own check of NATS: its connections are away.
	testenv.Eventually(t, time.Minute, "serve to report NATS unreachable", func() bool {
		resp, err := http.Get(s.httpURL + "/readyz")
		if err != nil {
			return false
		}
		_ = resp.Body.Close()
		return resp.StatusCode == http.StatusServiceUnavailable
	})
	// startInProcessServe's cleanup stops serve and wants exit 0.
}
