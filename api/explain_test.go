package api_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/turnstile-dev/turnstile/api"
	"github.com/turnstile-dev/turnstile/fsm"
)

// A NATS user may publish a command with the API's actor and no proof
// (the engine refuses it when it gets to it): queued, explain does not
// show it as the API's, but keeps what it claims apart, in
// unproven_actor. A command the API sent is the API's.
func TestExplainUnprovenAPIActor(t *testing.T) {
	// The command timeout bounds the create below, decided by the engine,
	// and the stop's lookup of its key's outcome and its publish (two
	// JetStream round trips, each given 2 s by the client) before the
	// outcome wait that is to run out. 300 ms, once, could run out on a
	// loaded host in the create's decision (504, not 202) or in the stop's
	// publish (503, not 504).
	e := newEnv(t, envOptions{noReadModel: true, configure: func(c *api.Config) { c.CommandTimeout = 2 * time.Second }})
	e.create(t, "slow")
	// The engine is down: what is published stays queued, undecided.
	for _, eng := range e.core.Engines {
		if err := eng.Close(); err != nil {
			t.Fatal(err)
		}
	}
	forged := fsm.Command{ID: "forged-stop", Type: fsm.Stop, Workspace: "slow", Actor: api.ActorPrefix + "default"}
	e.publishRaw(t, forged)
	// The API's own: stored, and no outcome within the command timeout.
	e.wantStatus(t, e.do(t, "POST", "/v1/workspaces/slow/stop", "", api.IdempotencyHeader, "real-stop"), http.StatusGatewayTimeout)

	r := e.do(t, "GET", "/v1/workspaces/slow/explain", "")
	e.wantStatus(t, r, http.StatusOK)
	var x api.Explanation
	r.decode(t, &x)
	if len(x.Queued) != 2 {
		t.Fatalf("queued: %s", r.body)
	}
	if q := x.Queued[0]; q.CommandID != forged.ID || q.Actor != "" || q.UnprovenActor != forged.Actor {
		t.Errorf("a NATS user's command with the API's actor shows actor %q (unproven %q): %s", q.Actor, q.UnprovenActor, r.body)
	}
	if q := x.Queued[1]; q.CommandID != "real-stop" || q.Actor != api.ActorPrefix+testTokenName || q.UnprovenActor != "" {
		t.Errorf("the API's command shows actor %q (unproven %q): %s", q.Actor, q.UnprovenActor, r.body)
	}
}
