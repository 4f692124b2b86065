package audit_test

import (
	"strings"
	"testing"
	"time"

	"github.com/turnstile-dev/turnstile/audit"
	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/fsm"
)

// history decides cmds in order and wraps the accepted ones as envelopes.
func history(t *testing.T, id string, cmds ...fsm.Command) []events.Envelope {
	t.Helper()
	w := fsm.Workspace{ID: id}
	var out []events.Envelope
	for i, c := range cmds {
		c.ID, c.Workspace = "c"+string(rune('a'+i)), id
		d := fsm.Decide(w, c)
		if d.Outcome != fsm.Accepted {
			t.Fatalf("setup: %s not accepted: %+v", c.Type, d)
		}
		env := events.NewEnvelope(c.ID, w, *d.Event, c, time.Unix(int64(i), 0))
		env.StreamSeq = uint64(i + 1)
		out = append(out, env)
		w = env.State
	}
	return out
}

func TestLegalHistoryPasses(t *testing.T) {
	h := history(t, "ok",
		fsm.Command{Type: fsm.Create},
		fsm.Command{Type: fsm.ProvisionSucceeded, Generation: 1, ContainerID: "c1"},
		fsm.Command{Type: fsm.Restart},
		fsm.Command{Type: fsm.ProvisionFailed, Generation: 2, Reason: "boom"},
		fsm.Command{Type: fsm.Delete},
		fsm.Command{Type: fsm.DeleteSucceeded, Generation: 3},
	)
	st, vs := audit.Workspace("ok", h)
	if len(vs) != 0 || st.Status != fsm.Deleted || st.Seq != 6 {
		t.Fatalf("state %+v, violations %v", st, vs)
	}
}

func TestTamperedHistoriesFail(t *testing.T) {
	base := func() []events.Envelope {
		return history(t, "t", fsm.Command{Type: fsm.Create}, fsm.Command{Type: fsm.ProvisionSucceeded, Generation: 1})
	}
	cases := map[string]struct {
		tamper func([]events.Envelope) []events.Envelope
		want   string
	}{
		"illegal transition": {func(h []events.Envelope) []events.Envelope {
			h[1].Type = fsm.StoppedEv // stopped straight from provisioning
			return h
		}, "illegal transition"},
		"stored state lies": {func(h []events.Envelope) []events.Envelope {
			h[1].State.Status = fsm.Failed
			return h
		}, "differs from replayed state"},
		"sequence gap": {func(h []events.Envelope) []events.Envelope {
			h[1].Seq = 5
			return h
		}, "sequence 5 follows 1"},
		"foreign event": {func(h []events.Envelope) []events.Envelope {
			h[1].Workspace = "other"
			return h
		}, "belongs to workspace"},
		"failure without reason": {func(h []events.Envelope) []events.Envelope {
			h[1].Type, h[1].Payload.Reason = fsm.ProvisionFailedEv, ""
			h[1].State.Status = fsm.Failed
			return h
		}, "without a reason"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			_, vs := audit.Workspace("t", c.tamper(base()))
			if len(vs) == 0 {
				t.Fatal("tampered history passed the audit")
			}
			if !strings.Contains(vs[0].Problem, c.want) {
				t.Fatalf("violation %q does not mention %q", vs[0].Problem, c.want)
			}
		})
	}
}
