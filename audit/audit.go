package audit

import (
	"encoding/json"
	"fmt"

	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/fsm"
)

// Violation is one disagreement between a history and the lifecycle.
type Violation struct {
	Workspace string `json:"workspace"`
	Seq       uint64 `json:"seq"`
	StreamSeq uint64 `json:"stream_seq"`
	Problem   string `json:"problem"`
}

func (v Violation) String() string {
	return fmt.Sprintf("%s seq %d (stream %d): %s", v.Workspace, v.Seq, v.StreamSeq, v.Problem)
}

// Replayer checks one workspace's events, fed in order.
type Replayer struct {
	State      fsm.Workspace
	Violations []Violation
}

// NewReplayer starts from a workspace that never existed.
func NewReplayer(id string) *Replayer { return &Replayer{State: fsm.Workspace{ID: id}} }

// Step checks env against the replayed state and advances it. The replay
// continues from the replayed state, so one bad event is reported once.
func (r *Replayer) Step(env events.Envelope) {
	bad := func(format string, args ...any) {
		r.Violations = append(r.Violations, Violation{Workspace: env.Workspace, Seq: env.Seq, StreamSeq: env.StreamSeq, Problem: fmt.Sprintf(format, args...)})
	}
	if env.Workspace != r.State.ID {
		bad("event belongs to workspace %q", env.Workspace)
	}
	if env.Seq != r.State.Seq+1 {
		bad("sequence %d follows %d", env.Seq, r.State.Seq)
	}
	ev := env.Event()
	if err := fsm.Check(r.State, ev); err != nil {
		bad("illegal transition: %v", err)
	}
	next := fsm.Apply(r.State, ev)
	if !sameState(next, env.State) {
		bad("stored state %s differs from replayed state %s", describe(env.State), describe(next))
	}
	r.State = next
}

// Workspace replays a whole history.
func Workspace(id string, history []events.Envelope) (fsm.Workspace, []Violation) {
	r := NewReplayer(id)
	for _, e := range history {
		r.Step(e)
	}
	return r.State, r.Violations
}

func sameState(a, b fsm.Workspace) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return string(ja) == string(jb)
}

func describe(w fsm.Workspace) string {
	return fmt.Sprintf("(%s, generation %d, spec %d/%d, seq %d)", w.Status, w.Generation, w.AttemptSpecVersion, w.SpecVersion, w.Seq)
}
