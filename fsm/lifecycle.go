package fsm

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	looplab "github.com/looplab/fsm"
)

// rule is one row of the lifecycle table: a command, the states it is
// accepted from, the event it records and the state that event leads to.
// Decide, Apply, CommandFor and the looplab/fsm table below are all read
// from these rows, so each rule is stated once.
type rule struct {
	cmd   CommandType
	from  []Status
	event EventType
	to    Status
	// stays: the event keeps the state it is applied to (to is unused).
	stays bool
	// followUp: not a looplab transition of its own; decideSystem picks
	// this row instead of cmd's main one when a newer spec is pending.
	followUp bool
}

// rules is DESIGN.md's lifecycle table: every legal transition that changes
// something. No-ops (noop) and rejections (rejectionCode) are what is not
// here. Each command's first row names the event it records.
func rules() []rule {
	live := []Status{Provisioning, Running, Stopping, Stopped, Failed}
	return []rule{
		{cmd: Create, from: []Status{None, Deleted}, event: Created, to: Provisioning},
		{cmd: Start, from: []Status{Stopped, Failed}, event: StartRequested, to: Provisioning},
		{cmd: Stop, from: []Status{Provisioning, Running, Failed}, event: StopRequested, to: Stopping},
		{cmd: Restart, from: []Status{Running, Stopped, Failed}, event: RestartRequested, to: Provisioning},
		{cmd: Delete, from: live, event: DeleteRequested, to: Deleting},
		// configure keeps the state except in running, where it restarts to apply.
		{cmd: Configure, from: []Status{Running}, event: Configured, to: Provisioning},
		{cmd: Configure, from: []Status{Provisioning, Stopping, Stopped, Failed}, event: Configured, stays: true},
		{cmd: ProvisionSucceeded, from: []Status{Provisioning}, event: Provisioned, to: Running},
		// With a newer spec pending, provision_succeeded starts the one
		// follow-up attempt instead (see decideSystem).
		{cmd: ProvisionSucceeded, from: []Status{Provisioning}, event: ReprovisionStarted, to: Provisioning, followUp: true},
		{cmd: ProvisionFailed, from: []Status{Provisioning}, event: ProvisionFailedEv, to: Failed},
		{cmd: StopSucceeded, from: []Status{Stopping}, event: StoppedEv, to: Stopped},
		{cmd: StopFailed, from: []Status{Stopping}, event: StopFailedEv, to: Failed},
		{cmd: DeleteSucceeded, from: []Status{Deleting}, event: DeletedEv, to: Deleted},
		{cmd: DeleteFailed, from: []Status{Deleting}, event: DeleteFailedEv, to: Failed},
		{cmd: ContainerExited, from: []Status{Running}, event: ContainerExitedEv, to: Failed},
		{cmd: DeadlineExceeded, from: []Status{Provisioning, Stopping, Deleting}, event: DeadlineExceededEv, to: Failed},
	}
}

// ruleTable is rules, built once: Apply and Decide read it on the engine's
// hot path. Nothing writes it after the once.
var ruleTable = sync.OnceValue(rules)

// transitions is the rules as looplab/fsm events.
func transitions() []looplab.EventDesc {
	var out []looplab.EventDesc
	for _, r := range rules() {
		switch {
		case r.followUp:
		case r.stays:
			for _, st := range r.from {
				out = append(out, looplab.EventDesc{Name: string(r.cmd), Src: []string{st.String()}, Dst: st.String()})
			}
		default:
			src := make([]string, len(r.from))
			for i, st := range r.from {
				src[i] = st.String()
			}
			out = append(out, looplab.EventDesc{Name: string(r.cmd), Src: src, Dst: r.to.String()})
		}
	}
	return out
}

// eventOf is the event cmd records (its first rule's); ok is false for an
// unknown command.
func eventOf(cmd CommandType) (EventType, bool) {
	for _, r := range ruleTable() {
		if r.cmd == cmd {
			return r.event, true
		}
	}
	return "", false
}

// ruleOf is the rule that records e from st: the one whose sources hold st,
// else (a history the table does not allow, which Apply still folds) e's
// rule that keeps the state, if it has one, or its first. ok is false for
// an unknown event.
func ruleOf(e EventType, st Status) (rule, bool) {
	var first rule
	found := false
	for _, r := range ruleTable() {
		if r.event != e {
			continue
		}
		if slices.Contains(r.from, st) {
			return r, true
		}
		if !found || r.stays {
			first, found = r, true
		}
	}
	return first, found
}

// landing is where e leads from st.
func landing(st Status, e EventType) Status {
	r, ok := ruleOf(e, st)
	if !ok || r.stays {
		return st
	}
	return r.to
}

// transitionKey is one cell of the lifecycle table.
type transitionKey struct {
	from Status
	cmd  CommandType
}

// table is the lifecycle table as looplab/fsm resolves it, for every state
// and command: computed once, on first use, and only read after that.
// Building a looplab FSM per decision cost 7-80 µs and ~460 allocations on
// the engine's hot path; a lookup costs nanoseconds. It is not mutable
// state: nothing writes it after the once.
var table = sync.OnceValue(func() map[transitionKey]Status {
	out := map[transitionKey]Status{}
	for _, st := range Statuses() {
		for _, cmd := range append(UserCommands(), SystemCommands()...) {
			if dst, ok := resolve(st, cmd); ok {
				out[transitionKey{st, cmd}] = dst
			}
		}
	}
	return out
})

// transition says where cmd leads from st; ok is false when the table has
// no such transition.
func transition(st Status, cmd CommandType) (Status, bool) {
	dst, ok := table()[transitionKey{st, cmd}]
	return dst, ok
}

// resolve asks looplab/fsm where cmd leads from st.
func resolve(st Status, cmd CommandType) (Status, bool) {
	m := looplab.NewFSM(st.String(), transitions(), nil)
	err := m.Event(context.Background(), string(cmd))
	var same looplab.NoTransitionError
	switch {
	case err == nil:
		dst, _ := ParseStatus(m.Current())
		return dst, true
	case errors.As(err, &same):
		return st, true // legal, lands where it started (configure)
	default:
		return st, false
	}
}

// noop reports user commands that succeed without an event, so that scripts
// can say "ensure running" twice.
func noop(w Workspace, c Command) bool {
	switch c.Type {
	case Start:
		return w.Status == Running
	case Stop:
		return w.Status == Stopping || w.Status == Stopped
	case Delete:
		return w.Status == Deleting || w.Status == Deleted
	case Configure:
		return w.Status.Live() && c.Spec != nil && c.Spec.Equal(w.Spec)
	}
	return false
}

// Outcome is what became of a command.
type Outcome string

// Outcomes.
const (
	Accepted Outcome = "accepted" // an event was recorded
	Noop     Outcome = "noop"     // already so; nothing recorded
	Rejected Outcome = "rejected" // refused; nothing recorded
	Stale    Outcome = "stale"    // a system outcome of a superseded attempt; nothing recorded
)

// Decision is the verdict on one command.
type Decision struct {
	Outcome   Outcome
	Event     *Event     // Accepted only
	Rejection *Rejection // Rejected only
	// Reason explains a stale or no-op outcome.
	Reason string
}

// Decide judges cmd against w. It never fails: malformed commands are
// rejected as invalid.
func Decide(w Workspace, cmd Command) Decision { return decide(w, cmd, ValidateSpec) }

// decide is Decide with spec as the check of a command's spec.
func decide(w Workspace, cmd Command, spec func(Spec) error) Decision {
	if r := cmd.validate(spec); r != nil {
		return reject(w, r.Code, cmd.Type, r.Message)
	}
	if w.ID != "" && cmd.Workspace != w.ID {
		return reject(w, CodeInvalid, cmd.Type, fmt.Sprintf("command for workspace %s decided against workspace %s", cmd.Workspace, w.ID))
	}
	if cmd.Type.IsSystem() {
		return decideSystem(w, cmd)
	}
	if noop(w, cmd) {
		return Decision{Outcome: Noop, Reason: fmt.Sprintf("workspace %s is already %s", w.ID, w.Status)}
	}
	dst, ok := transition(w.Status, cmd.Type)
	if !ok {
		code := rejectionCode(w.Status, cmd.Type)
		return reject(w, code, cmd.Type, rejectionMessage(w, cmd.Type, code))
	}
	ev := Event{Generation: w.Generation, SpecVersion: w.SpecVersion}
	if dst != w.Status && dst.InFlight() {
		ev.Generation = w.Generation + 1
	}
	ev.Type, _ = eventOf(cmd.Type)
	if cmd.Type == Create || cmd.Type == Configure {
		spec := Spec{}
		if cmd.Spec != nil {
			spec = cmd.Spec.Clone()
		}
		ev.Spec, ev.SpecVersion = &spec, w.SpecVersion+1
	}
	return Decision{Outcome: Accepted, Event: &ev}
}

func decideSystem(w Workspace, cmd Command) Decision {
	if cmd.Generation > w.Generation {
		return reject(w, CodeInvalid, cmd.Type, fmt.Sprintf(
			"%s reports on generation %d, but workspace %s is only at generation %d", cmd.Type, cmd.Generation, w.ID, w.Generation))
	}
	dst, ok := transition(w.Status, cmd.Type)
	if cmd.Generation < w.Generation || !ok {
		return Decision{Outcome: Stale, Reason: fmt.Sprintf(
			"%s for generation %d is stale: workspace %s is %s at generation %d", cmd.Type, cmd.Generation, w.ID, w.Status, w.Generation)}
	}
	ev := Event{Generation: w.Generation, SpecVersion: w.SpecVersion}
	ev.Type, _ = eventOf(cmd.Type)
	reason := cmd.Reason
	switch cmd.Type {
	case ProvisionSucceeded:
		ev.ContainerID = cmd.ContainerID
		if w.PendingSpec() {
			// The coalesced configures: exactly one follow-up attempt with the newest spec.
			// The container it reported is replaced by the follow-up attempt.
			ev.Type, ev.Generation, ev.ContainerID = ReprovisionStarted, w.Generation+1, ""
			dst = landing(w.Status, ReprovisionStarted)
			reason = fmt.Sprintf("spec version %d arrived during generation %d; applying it", w.SpecVersion, w.Generation)
		}
	case ContainerExited:
		ev.ExitCode = cmd.ExitCode
		reason = containerExitReason(cmd)
	}
	if dst == Failed && reason == "" {
		reason = fmt.Sprintf("%s reported without a reason", cmd.Type)
	}
	ev.Reason = reason
	return Decision{Outcome: Accepted, Event: &ev}
}

func containerExitReason(cmd Command) string {
	msg := "container exited"
	if cmd.ExitCode != nil {
		msg = fmt.Sprintf("container exited with code %d", *cmd.ExitCode)
	}
	if cmd.Reason != "" && cmd.Reason != msg {
		msg += ": " + cmd.Reason
	}
	return msg
}

// Apply folds one event into a state. It trusts the event: Check is what
// verifies that a recorded event was legal.
func Apply(w Workspace, e Event) Workspace {
	n := w
	n.Spec = w.Spec.Clone()
	n.Seq++
	n.Generation = e.Generation
	n.SpecVersion = e.SpecVersion
	if e.Spec != nil {
		n.Spec = e.Spec.Clone()
	}
	if r, ok := ruleOf(e.Type, w.Status); ok && !r.stays {
		n.Status = r.to
		switch r.to {
		case Provisioning: // a new attempt, with the newest spec
			n.AttemptSpecVersion = n.SpecVersion
		case Failed:
			n.LastError = e.Reason
		case Deleted:
			n.ContainerID = ""
		}
	}
	if e.Type == Provisioned && e.ContainerID != "" {
		n.ContainerID = e.ContainerID
	}
	return n
}

// CommandFor reconstructs the command that would have produced e from a
// state at generation gen, for audits.
func CommandFor(e Event, prevGeneration uint64) Command {
	c := Command{Generation: e.Generation, Reason: e.Reason}
	r, ok := ruleOf(e.Type, None)
	if !ok {
		return c
	}
	if !r.cmd.IsSystem() {
		return Command{Type: r.cmd, Spec: e.Spec}
	}
	c.Type = r.cmd
	switch e.Type {
	case Provisioned:
		c.ContainerID = e.ContainerID
	case ReprovisionStarted:
		c.Generation, c.Reason = prevGeneration, ""
	case ContainerExitedEv:
		c.ExitCode, c.Reason = e.ExitCode, ""
	}
	return c
}

// Check verifies that e is a legal event from w: the command it records
// would be accepted from w and would produce the same transition.
func Check(w Workspace, e Event) error {
	if !e.Type.Known() {
		return fmt.Errorf("unknown event type %q", e.Type)
	}
	cmd := CommandFor(e, w.Generation)
	cmd.ID, cmd.Workspace = "audit", w.ID
	if cmd.Workspace == "" {
		cmd.Workspace = "audit"
	}
	d := decide(w, cmd, validateRecordedSpec)
	if d.Outcome != Accepted {
		why := d.Reason
		if d.Rejection != nil {
			why = d.Rejection.Message
		}
		return fmt.Errorf("%s is not legal from %s at generation %d: %s", e.Type, w.Status, w.Generation, why)
	}
	got := d.Event
	switch {
	case (e.Spec != nil) != (e.Type == Created || e.Type == Configured):
		return fmt.Errorf("%s must carry a spec exactly when it is created or configured", e.Type)
	case e.ContainerID != "" && e.Type != Provisioned:
		return fmt.Errorf("%s carries a container id; only provisioned may", e.Type)
	case w.Status != Failed && Apply(w, e).Status == Failed && e.Reason == "":
		return fmt.Errorf("%s fails workspace %s without a reason", e.Type, w.ID)
	}
	if got.Type != e.Type || got.Generation != e.Generation || got.SpecVersion != e.SpecVersion {
		return fmt.Errorf("%s from %s at generation %d should record %s at generation %d, spec %d; it records generation %d, spec %d",
			e.Type, w.Status, w.Generation, got.Type, got.Generation, got.SpecVersion, e.Generation, e.SpecVersion)
	}
	return nil
}

// Allowed lists the user commands that would be accepted or be no-ops now.
func Allowed(w Workspace) []CommandType {
	out := []CommandType{}
	for _, c := range UserCommands() {
		if c == Configure {
			if w.Status.Live() {
				out = append(out, c)
			}
			continue
		}
		if _, ok := transition(w.Status, c); ok || noop(w, Command{Type: c}) {
			out = append(out, c)
		}
	}
	return out
}

func rejectionCode(st Status, cmd CommandType) Code {
	switch {
	case st == None:
		return CodeNotFound
	case cmd == Create:
		return CodeExists
	case st == Deleting || st == Deleted:
		return CodeGone
	default:
		return CodeBusy
	}
}

func rejectionMessage(w Workspace, cmd CommandType, code Code) string {
	allowed := Allowed(w)
	switch code {
	case CodeNotFound:
		return fmt.Sprintf("workspace %s does not exist: create it first", w.ID)
	case CodeExists:
		return fmt.Sprintf("workspace %s already exists (%s, generation %d): use start, restart or configure instead", w.ID, w.Status, w.Generation)
	case CodeGone:
		if w.Status == Deleted {
			return fmt.Sprintf("workspace %s is deleted: create it again to bring it back", w.ID)
		}
		return fmt.Sprintf("workspace %s is being deleted (generation %d): wait for deleted, then create it again", w.ID, w.Generation)
	default:
		return fmt.Sprintf("workspace %s is %s (generation %d): %s is refused until that attempt ends; wait for it to settle, or send one of %v now",
			w.ID, w.Status, w.Generation, cmd, slices.DeleteFunc(allowed, func(c CommandType) bool { return c == cmd }))
	}
}

// Refuse is the decision on a command that Decide accepts but the
// installation does not allow (a spec beyond what its serve may run,
// engine.Config.AdmitSpec): rejected invalid with msg, beside w's state
// and the commands allowed now, as any rejection.
func Refuse(w Workspace, cmd CommandType, msg string) Decision {
	return reject(w, CodeInvalid, cmd, msg)
}

func reject(w Workspace, code Code, cmd CommandType, msg string) Decision {
	return Decision{Outcome: Rejected, Rejection: &Rejection{
		Code: code, Command: cmd, State: w.Status, Generation: w.Generation,
		SpecVersion: w.SpecVersion, Allowed: Allowed(w), Message: msg,
	}}
}
