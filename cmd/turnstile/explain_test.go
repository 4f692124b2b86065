package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/turnstile-dev/turnstile/api"
	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/internal/testenv"
)

// TestExplainCommand: `turnstile explain` on a provisioning workspace shows
// the attempt under way with its deadline, the command queued behind it
// (the engine is down: it stays undecided) and the commands allowed now,
// as a table and as JSON. Issue 14 item 5.
func TestExplainCommand(t *testing.T) {
	core := testenv.StartCore(t, testenv.CoreOptions{})
	env := map[string]string{"TURNSTILE_NATS_URL": core.NATS.URL}
	if code, out, errs := runCLI(t, env, "create", "why"); code != 0 {
		t.Fatalf("create: exit %d\n%s%s", code, out, errs)
	}
	for _, e := range core.Engines {
		if err := e.Close(); err != nil {
			t.Fatal(err)
		}
	}
	// A stop published and never decided, and one claiming the API's
	// actor without its proof (a NATS user's: the engine would refuse it).
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, cmd := range []fsm.Command{
		{ID: "queued-stop", Type: fsm.Stop, Workspace: "why", Actor: "someone"},
		{ID: "forged-stop", Type: fsm.Stop, Workspace: "why", Actor: "api:default"},
	} {
		data, err := events.EncodeCommand(cmd)
		if err != nil {
			t.Fatal(err)
		}
		m := nats.NewMsg(events.NewNames("").Command("why"))
		m.Data = data
		m.Header.Set(jetstream.MsgIDHeader, cmd.ID)
		if _, err := core.JS.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}

	code, out, errs := runCLI(t, env, "explain", "why", "--deadline-provisioning", "7m")
	if code != 0 || !strings.Contains(out, "provision, generation 1") || !strings.Contains(out, "user create") ||
		!strings.Contains(out, "stop queued-stop by someone") || !(strings.Contains(out, "(in 6m") || strings.Contains(out, "(in 7m0s)")) {
		t.Fatalf("explain: exit %d\n%s%s", code, out, errs)
	}
	if !strings.Contains(out, "stop forged-stop by api:default (unproven)") {
		t.Fatalf("explain shows an unproven API actor as the API's:\n%s", out)
	}
	code, out, errs = runCLI(t, env, "explain", "why", "-o", "json")
	var x api.Explanation
	if code != 0 || json.Unmarshal([]byte(out), &x) != nil || x.InFlight == nil || x.InFlight.Deadline == nil ||
		!x.InFlight.Deadline.Equal(x.InFlight.Started.Add(10*time.Minute)) || len(x.Queued) != 2 || len(x.Allowed) == 0 ||
		x.Queued[1].Actor != "" || x.Queued[1].UnprovenActor != "api:default" {
		t.Fatalf("explain -o json: exit %d\n%s%s", code, out, errs)
	}
	if code, _, errs := runCLI(t, env, "explain", "nobody"); code != exitRejected || !strings.Contains(errs, "not_found") {
		t.Fatalf("explain of nothing: exit %d\n%s", code, errs)
	}
}
