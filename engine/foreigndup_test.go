package engine_test

import (
	"context"
	"testing"
	"time"

	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/internal/testenv"
)

// A message in the event stream whose Nats-Msg-Id is a command's id, but
// which is neither that command's event nor its outcome (written by
// something other than an engine: an operator's tool, the admin role's push
// consumer; the user role through a reply subject before it had an account
// of its own, cmd/turnstile TestReplySubjectsWriteNothing; system report
// ids are predictable), makes the command's event a "duplicate", and the
// engine waits for that event or an outcome, which never come. Once the
// window that refused the event has passed it decides the command (before,
// the workspace's commands and one of its handlers were held for ever).
func TestForeignDuplicateHoldsNothing(t *testing.T) {
	const window = 3 * time.Second
	core := testenv.StartCore(t, testenv.CoreOptions{DuplicateWindow: window})
	user := core.Client(t, "user")
	publishRaw(t, core, "turnstile.evt.junk", "held-1", `{"forged":true}`)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := user.Publish(ctx, fsm.Command{ID: "held-1", Type: fsm.Create, Workspace: "victim"}); err != nil {
		t.Fatal(err)
	}
	// Decided at the latest once the window that refused its event has
	// passed (and the handling's retry delay after it).
	ctx, cancel = context.WithTimeout(context.Background(), 5*window)
	defer cancel()
	o, err := user.Outcome(ctx, "held-1")
	if err != nil {
		t.Fatalf("create held-1 of victim, whose id a foreign message in the event stream carries: %v", err)
	}
	t.Logf("outcome: %s", o.Outcome)
}
