package worker_test

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/secrets"
)

// TestSecretResolution: the worker resolves secret://NAME references just
// before it provisions, so the provisioner (here sim, whose agent reads
// AGENT_START_DELAY as the real one does) sees the value while the events
// keep the reference; a secret set again is used by the next attempt; a
// missing one fails the attempt with a reason naming it, and no worker
// without a store passes a reference on as a value. Issue 12 item 6.
func TestSecretResolution(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	store := secrets.NewStore(filepath.Join(t.TempDir(), "secrets"))
	set := func(name, value string) {
		t.Helper()
		if _, err := store.Set(ctx, name, []byte(value)); err != nil {
			t.Fatal(err)
		}
	}
	const password = "pw-3f9a1c-never-in-events"
	set("delay", "0s")
	set("db", password)
	r := newRig(t, newSim(t, 0, 0), rigOptions{secrets: secrets.NewResolver(store)})
	spec := &fsm.Spec{Env: map[string]string{"AGENT_START_DELAY": "secret://delay", "DB_PASSWORD": "secret://db"}}

	t.Run("Resolved", func(t *testing.T) {
		// Unresolved, "secret://delay" is no duration: the agent exits 2
		// and the attempt fails.
		r.send(t, fsm.Command{Type: fsm.Create, Workspace: "sec", Spec: spec})
		st := r.wait(t, "sec", fsm.Running, 1, 30*time.Second)
		if st.Spec.Env["DB_PASSWORD"] != "secret://db" {
			t.Fatalf("state spec env %v: want the reference", st.Spec.Env)
		}
	})

	t.Run("Rotation", func(t *testing.T) {
		set("delay", "not-a-duration")
		r.send(t, fsm.Command{Type: fsm.Restart, Workspace: "sec"})
		r.wait(t, "sec", fsm.Failed, 2, 30*time.Second)
		set("delay", "0s")
		r.send(t, fsm.Command{Type: fsm.Start, Workspace: "sec"})
		r.wait(t, "sec", fsm.Running, 3, 30*time.Second)
	})

	t.Run("Missing", func(t *testing.T) {
		r.send(t, fsm.Command{Type: fsm.Create, Workspace: "nosec", Spec: &fsm.Spec{Env: map[string]string{"API_TOKEN": "secret://absent"}}})
		st := r.wait(t, "nosec", fsm.Failed, 1, 30*time.Second)
		if !strings.Contains(st.LastError, `secret "absent"`) || !strings.Contains(st.LastError, "API_TOKEN") {
			t.Fatalf("reason %q does not name the secret and its variable", st.LastError)
		}
		set("absent", "now-here")
		r.send(t, fsm.Command{Type: fsm.Start, Workspace: "nosec"})
		r.wait(t, "nosec", fsm.Running, 2, 30*time.Second)
	})

	t.Run("EventsHoldOnlyReferences", func(t *testing.T) {
		for _, id := range []string{"sec", "nosec"} {
			for _, e := range r.history(t, id) {
				b, err := json.Marshal(e)
				if err != nil {
					t.Fatal(err)
				}
				if strings.Contains(string(b), password) || strings.Contains(string(b), "now-here") {
					t.Fatalf("event %d of %s holds a secret value: %s", e.Seq, id, b)
				}
			}
		}
	})
}

// TestSecretWithoutStore: a worker given no secret store fails an attempt
// whose spec refers to a secret instead of passing "secret://NAME" on as
// the value. Issue 12 item 6.
func TestSecretWithoutStore(t *testing.T) {
	r := newRig(t, newSim(t, 0, 0), rigOptions{})
	r.send(t, fsm.Command{Type: fsm.Create, Workspace: "nostore", Spec: &fsm.Spec{Env: map[string]string{"AGENT_EXIT_CODE": "secret://code"}}})
	st := r.wait(t, "nostore", fsm.Failed, 1, 30*time.Second)
	if !strings.Contains(st.LastError, "no secret store") {
		t.Fatalf("reason %q does not say there is no secret store", st.LastError)
	}
}

// TestDockerSecretsStayOutOfReasons: on the real Docker engine, a
// container that prints a secret's value as it fails (here the agent,
// refusing its start delay, quotes the value it was given) fails the
// workspace with that output in the reason, but the value replaced by its
// reference: reasons go into events, the read model, logs and webhooks,
// where no secret value may go.
func TestDockerSecretsStayOutOfReasons(t *testing.T) {
	t.Parallel()
	d := newDocker(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	store := secrets.NewStore(filepath.Join(t.TempDir(), "secrets"))
	value := randomID("hunter2-not-a-duration")
	if _, err := store.Set(ctx, "delay", []byte(value)); err != nil {
		t.Fatal(err)
	}
	r := newRig(t, d.prov, rigOptions{secrets: secrets.NewResolver(store)})
	ws := randomID("leaky")
	r.send(t, fsm.Command{Type: fsm.Create, Workspace: ws, Spec: &fsm.Spec{Env: map[string]string{"AGENT_START_DELAY": "secret://delay"}}})
	st := r.wait(t, ws, fsm.Failed, 1, 90*time.Second)
	if strings.Contains(st.LastError, value) || !strings.Contains(st.LastError, "last output") ||
		!strings.Contains(st.LastError, `AGENT_START_DELAY="secret://delay"`) {
		t.Fatalf("reason %q: want the container's last output with the secret's reference, never its value", st.LastError)
	}
	for _, e := range r.history(t, ws) {
		b, err := json.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(b), value) {
			t.Fatalf("event %d holds the secret's value: %s", e.Seq, b)
		}
	}
}
