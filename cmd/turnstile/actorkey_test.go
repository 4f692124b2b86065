package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/turnstile-dev/turnstile/client"
	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/fsm"
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
