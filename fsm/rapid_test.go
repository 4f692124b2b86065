package fsm_test

import (
	"encoding/json"
	"slices"
	"testing"

	"pgregory.net/rapid"

	"github.com/turnstile-dev/turnstile/fsm"
)

// lifecycleMachine drives a few workspaces with random interleavings of user
// commands and system outcomes of random (mostly superseded) generations, the
// way a real bus delivers them, and checks every verdict against DESIGN.md's
// tables and every state against the lifecycle's invariants.
type lifecycleMachine struct {
	ids   []string
	hs    map[string]*history
	specs []fsm.Spec
	// maxGen is the highest generation each workspace has had.
	maxGen map[string]uint64
}

func newLifecycleMachine() *lifecycleMachine {
	m := &lifecycleMachine{
		ids:    []string{"a", "b"},
		hs:     map[string]*history{},
		maxGen: map[string]uint64{},
		specs: []fsm.Spec{
			{},
			specA,
			specB,
			{Image: "alpine:3.20", CPUs: 2, Env: map[string]string{"X": "1"}},
		},
	}
	for _, id := range m.ids {
		m.hs[id] = &history{w: fsm.Workspace{ID: id}}
	}
	return m
}

// User sends a random user command.
func (m *lifecycleMachine) User(t *rapid.T) {
	h := m.hs[rapid.SampledFrom(m.ids).Draw(t, "workspace")]
	// Mostly commands the state takes, so that runs go deep; refusals too.
	cmds := fsm.UserCommands()
	if allowed := fsm.Allowed(h.w); rapid.IntRange(0, 2).Draw(t, "allowed_only") > 0 {
		cmds = allowed
	}
	ct := rapid.SampledFrom(cmds).Draw(t, "user")
	c := command(h.w.ID, ct)
	switch ct {
	case fsm.Configure:
		c = withSpec(c, rapid.SampledFrom(m.specs).Draw(t, "spec"))
	case fsm.Create:
		if rapid.Bool().Draw(t, "create_with_spec") {
			c = withSpec(c, rapid.SampledFrom(m.specs).Draw(t, "spec"))
		}
	}
	m.step(t, h, c, expectUser(h.w, c))
}

// Configure sends a configure with a random spec, more often than User
// would: spec coalescing is where the lifecycle is subtle.
func (m *lifecycleMachine) Configure(t *rapid.T) {
	h := m.hs[rapid.SampledFrom(m.ids).Draw(t, "workspace")]
	c := withSpec(command(h.w.ID, fsm.Configure), rapid.SampledFrom(m.specs).Draw(t, "spec"))
	m.step(t, h, c, expectUser(h.w, c))
}

// System sends a random system outcome of a random generation in
// [0, current+1], biased to older ones.
func (m *lifecycleMachine) System(t *rapid.T) {
	h := m.hs[rapid.SampledFrom(m.ids).Draw(t, "workspace")]
	ct := rapid.SampledFrom(fsm.SystemCommands()).Draw(t, "system")
	cur := h.w.Generation
	var gen uint64
	switch r := rapid.IntRange(0, 9).Draw(t, "generation_kind"); {
	case r < 5 && cur > 0:
		gen = rapid.Uint64Range(0, cur-1).Draw(t, "older")
	case r < 9:
		gen = cur
	default:
		gen = cur + 1
	}
	m.step(t, h, m.outcome(t, h, ct, gen), expectSystem(h.w, system(h.w.ID, ct, gen)))
}

// Settle sends an outcome of the current generation that answers the current
// state (success mostly), so that random runs get past in-flight states.
func (m *lifecycleMachine) Settle(t *rapid.T) {
	h := m.hs[rapid.SampledFrom(m.ids).Draw(t, "workspace")]
	answers := systemTable[h.w.Status]
	if len(answers) == 0 {
		t.Skip("nothing in flight")
	}
	var cts []fsm.CommandType
	for _, ct := range fsm.SystemCommands() {
		if _, ok := answers[ct]; ok {
			cts = append(cts, ct)
		}
	}
	ct := cts[0] // success
	if len(cts) > 1 && rapid.IntRange(0, 2).Draw(t, "fail") == 0 {
		ct = rapid.SampledFrom(cts[1:]).Draw(t, "failure")
	}
	c := m.outcome(t, h, ct, h.w.Generation)
	m.step(t, h, c, expectSystem(h.w, c))
}

// outcome builds a system command with a random reason and exit code.
func (m *lifecycleMachine) outcome(t *rapid.T, h *history, ct fsm.CommandType, gen uint64) fsm.Command {
	c := system(h.w.ID, ct, gen)
	c.Reason = rapid.SampledFrom([]string{"", "", "boom"}).Draw(t, "reason")
	if ct == fsm.ContainerExited && rapid.Bool().Draw(t, "has_exit_code") {
		c.ExitCode = new(rapid.IntRange(-1, 255).Draw(t, "exit_code"))
	}
	return c
}

// step decides c, checks the verdict against wt, and applies an accepted event.
func (m *lifecycleMachine) step(t *rapid.T, h *history, c fsm.Command, wt want) {
	prev := h.w
	d := decideAndCheck(t, prev, c, wt)
	// Generation 0 is malformed (invalid); every other older one is stale.
	if c.Type.IsSystem() && c.Generation > 0 && c.Generation < prev.Generation && d.Outcome != fsm.Stale {
		t.Fatalf("%s for generation %d at generation %d: %s, want stale", c.Type, c.Generation, prev.Generation, d.Outcome)
	}
	if d.Outcome != fsm.Accepted {
		// Nothing to record: the state stays exactly as it was.
		if d.Event != nil {
			t.Fatalf("%s carries an event", d.Outcome)
		}
		return
	}
	ev := *d.Event
	if err := fsm.Check(prev, ev); err != nil {
		t.Fatalf("accepted %s fails Check from %s: %v", ev.Type, prev.Status, err)
	}
	next := fsm.Apply(prev, ev)
	if next.Generation != ev.Generation || next.Generation < prev.Generation || next.Seq != prev.Seq+1 {
		t.Fatalf("%s from %+v gave %+v", ev.Type, prev, next)
	}
	h.w = next
	h.events = append(h.events, ev)
}

// Check holds after every step.
func (m *lifecycleMachine) Check(t *rapid.T) {
	for _, id := range m.ids {
		w := m.hs[id].w
		if !slices.Contains(fsm.Statuses(), w.Status) {
			t.Fatalf("%s: unknown status %q", id, w.Status)
		}
		if w.Generation < m.maxGen[id] {
			t.Fatalf("%s: generation went from %d to %d", id, m.maxGen[id], w.Generation)
		}
		m.maxGen[id] = w.Generation
		if w.Seq != uint64(len(m.hs[id].events)) {
			t.Fatalf("%s: seq %d after %d events", id, w.Seq, len(m.hs[id].events))
		}
		if w.Status == fsm.Failed && w.LastError == "" {
			t.Fatalf("%s: failed without a reason", id)
		}
		if w.AttemptSpecVersion > w.SpecVersion {
			t.Fatalf("%s: attempt runs spec %d of %d", id, w.AttemptSpecVersion, w.SpecVersion)
		}
		if w.Status == fsm.Running && w.AttemptSpecVersion != w.SpecVersion {
			t.Fatalf("%s: running spec %d while spec %d is the newest", id, w.AttemptSpecVersion, w.SpecVersion)
		}
		if w.Exists() != (w.Generation > 0) {
			t.Fatalf("%s: %s at generation %d", id, w.Status, w.Generation)
		}
	}
}

// replay rebuilds every workspace from its events alone, as audit.Workspace
// does (Check, then Apply), in memory and through the events' JSON encoding.
func (m *lifecycleMachine) replay(t *rapid.T) {
	for _, id := range m.ids {
		h := m.hs[id]
		mustReplay(t, h)
		w := fsm.Workspace{ID: id}
		for i, ev := range h.events {
			b, err := json.Marshal(ev)
			if err != nil {
				t.Fatalf("%s event %d: %v", id, i+1, err)
			}
			var dec fsm.Event
			if err := json.Unmarshal(b, &dec); err != nil {
				t.Fatalf("%s event %d: %v", id, i+1, err)
			}
			if err := fsm.Check(w, dec); err != nil {
				t.Fatalf("%s event %d (%s) decoded from JSON: %v", id, i+1, dec.Type, err)
			}
			w = fsm.Apply(w, dec)
		}
		got, _ := json.Marshal(w)
		want, _ := json.Marshal(h.w)
		if string(got) != string(want) {
			t.Fatalf("%s: replay from JSON gave %s, want %s", id, got, want)
		}
	}
}

func TestLifecycleProperties(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		m := newLifecycleMachine()
		t.Repeat(rapid.StateMachineActions(m))
		m.replay(t)
	})
}

// TestLifecycleReachesEveryState guards the property test against a generator
// that quietly stops exploring: the machine must reach every state and record
// every event type, the follow-up attempt included.
func TestLifecycleReachesEveryState(t *testing.T) {
	events := map[fsm.EventType]int{}
	missing := func() []fsm.EventType {
		var out []fsm.EventType
		for _, et := range fsm.EventTypes() {
			if events[et] == 0 {
				out = append(out, et)
			}
		}
		return out
	}
	// Rounds of random runs until every event type was recorded; more than
	// one round is rare, three missing something is a generator gone blind.
	for round := 0; round < 3 && len(missing()) > 0; round++ {
		rapid.Check(t, func(t *rapid.T) {
			m := newLifecycleMachine()
			t.Repeat(rapid.StateMachineActions(m))
			for _, h := range m.hs {
				for _, ev := range h.events {
					events[ev.Type]++
				}
			}
		})
	}
	t.Logf("events recorded: %v", events)
	if miss := missing(); len(miss) > 0 {
		t.Errorf("no run recorded %v", miss)
	}
}
