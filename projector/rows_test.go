package projector

import (
	"testing"
	"time"

	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/fsm"
)

// TestFold walks one workspace through a life and a second incarnation and
// checks the time columns and transitions fold derives.
func TestFold(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var w fsm.Workspace
	var row *workspaceRow
	step := func(i int, cmd fsm.Command) (workspaceRow, eventRow) {
		t.Helper()
		cmd.ID, cmd.Workspace = "c"+string(rune('a'+i)), "ws-1"
		if cmd.Type.IsSystem() {
			cmd.Generation = w.Generation
		}
		d := fsm.Decide(w, cmd)
		if d.Outcome != fsm.Accepted {
			t.Fatalf("step %d: %s %s: %+v", i, cmd.Type, d.Outcome, d.Rejection)
		}
		env := events.NewEnvelope("e", w, *d.Event, cmd, t0.Add(time.Duration(i)*time.Minute))
		env.StreamSeq = uint64(10 + i)
		f, err := factsOf(&env, "", "")
		if err != nil {
			t.Fatal(err)
		}
		nw, e := fold(row, &f)
		w, row = env.State, &nw
		return nw, e
	}
	at := func(i int) time.Time { return t0.Add(time.Duration(i) * time.Minute) }

	r, e := step(0, fsm.Command{Type: fsm.Create})
	if e.FromStatus != "none" || e.ToStatus != "provisioning" || !r.CreatedAt.Equal(at(0)) {
		t.Fatalf("create: %+v %+v", r, e)
	}
	r, _ = step(1, fsm.Command{Type: fsm.Configure, Spec: &fsm.Spec{Image: "b"}})
	if r.Status != "provisioning" || !r.ChangedAt.Equal(at(0)) || !r.UpdatedAt.Equal(at(1)) || r.Image != "b" {
		t.Fatalf("configure while provisioning must not move status_changed_at: %+v", r)
	}
	r, e = step(2, fsm.Command{Type: fsm.ProvisionFailed, Reason: "pull failed"})
	if r.Status != "failed" || r.LastError == nil || *r.LastError != "pull failed" || e.Reason == nil || e.FromStatus != "provisioning" {
		t.Fatalf("provision_failed: %+v %+v", r, e)
	}
	step(3, fsm.Command{Type: fsm.Delete})
	r, _ = step(4, fsm.Command{Type: fsm.DeleteSucceeded})
	if r.DeletedAt == nil || !r.DeletedAt.Equal(at(4)) || !r.CreatedAt.Equal(at(0)) {
		t.Fatalf("deleted: %+v", r)
	}
	r, e = step(5, fsm.Command{Type: fsm.Create})
	if r.DeletedAt != nil || !r.CreatedAt.Equal(at(5)) || e.FromStatus != "deleted" || r.LastEventSeq != 6 || r.LastStreamSeq != 15 {
		t.Fatalf("second incarnation: %+v %+v", r, e)
	}
}

// TestStorableJSON: a NUL escape, which jsonb refuses, becomes U+FFFD's;
// an escaped backslash before "u0000" is text and stays (issue 12 item 5).
func TestStorableJSON(t *testing.T) {
	for in, want := range map[string]string{
		`{"a":"x"}`:                 `{"a":"x"}`,
		`{"a":"\u0000"}`:            `{"a":"\ufffd"}`,
		`{"a":"x\u0000y\u0000"}`:    `{"a":"x\ufffdy\ufffd"}`,
		`{"a":"\\u0000"}`:           `{"a":"\\u0000"}`,
		`{"a":"\\\u0000","b":"\""}`: `{"a":"\\\ufffd","b":"\""}`,
		`{"\u0000":1}`:              `{"\ufffd":1}`,
	} {
		if got := storableJSON(in); got != want {
			t.Errorf("storableJSON(%s) = %s, want %s", in, got, want)
		}
	}
	if got := storable("a\x00b\x00"); got != "a\uFFFDb\uFFFD" {
		t.Errorf("storable = %q", got)
	}
}
