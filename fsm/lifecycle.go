package fsm

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	looplab "github.com/looplab/fsm"
)

// transitions is DESIGN.md's lifecycle table as looplab/fsm events: every
// legal transition that changes something. No-ops (noop) and rejections
// (rejectionCode) are what is not here.
func transitions() []looplab.EventDesc {
	s := func(st ...Status) []string {
		out := make([]string, len(st))
		for i, x := range st {
			out[i] = x.String()
		}
		return out
	}
	live := []Status{Provisioning, Running, Stopping, Stopped, Failed}
	return []looplab.EventDesc{
		{Name: string(Create), Src: s(None, Deleted), Dst: Provisioning.String()},
		{Name: string(Start), Src: s(Stopped, Failed), Dst: Provisioning.String()},
		{Name: string(Stop), Src: s(Provisioning, Running, Failed), Dst: Stopping.String()},
		{Name: string(Restart), Src: s(Running, Stopped, Failed), Dst: Provisioning.String()},
		{Name: string(Delete), Src: s(live...), Dst: Deleting.String()},
		// configure keeps the state except in running, where it restarts to apply.
		{Name: string(Configure), Src: s(Running), Dst: Provisioning.String()},
		{Name: string(Configure), Src: s(Provisioning), Dst: Provisioning.String()},
		{Name: string(Configure), Src: s(Stopping), Dst: Stopping.String()},
		{Name: string(Configure), Src: s(Stopped), Dst: Stopped.String()},
		{Name: string(Configure), Src: s(Failed), Dst: Failed.String()},
		// With a newer spec pending, provision_succeeded starts the one
		// follow-up attempt instead (see decideSystem).
		{Name: string(ProvisionSucceeded), Src: s(Provisioning), Dst: Running.String()},
		{Name: string(ProvisionFailed), Src: s(Provisioning), Dst: Failed.String()},
		{Name: string(StopSucceeded), Src: s(Stopping), Dst: Stopped.String()},
		{Name: string(StopFailed), Src: s(Stopping), Dst: Failed.String()},
		{Name: string(DeleteSucceeded), Src: s(Deleting), Dst: Deleted.String()},
		{Name: string(DeleteFailed), Src: s(Deleting), Dst: Failed.String()},
		{Name: string(ContainerExited), Src: s(Running), Dst: Failed.String()},
		{Name: string(DeadlineExceeded), Src: s(Provisioning, Stopping, Deleting), Dst: Failed.String()},
	}
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
func Decide(w Workspace, cmd Command) Decision {
	if err := cmd.Validate(); err != nil {
		var r *Rejection
		errors.As(err, &r)
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
	switch cmd.Type {
	case Create:
		spec := Spec{}
		if cmd.Spec != nil {
			spec = cmd.Spec.Clone()
		}
		ev.Type, ev.Spec, ev.SpecVersion = Created, &spec, w.SpecVersion+1
	case Start:
		ev.Type = StartRequested
	case Stop:
		ev.Type = StopRequested
	case Restart:
		ev.Type = RestartRequested
	case Delete:
		ev.Type = DeleteRequested
	case Configure:
		spec := cmd.Spec.Clone()
		ev.Type, ev.Spec, ev.SpecVersion = Configured, &spec, w.SpecVersion+1
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
	reason := cmd.Reason
	switch cmd.Type {
	case ProvisionSucceeded:
		ev.Type, ev.ContainerID = Provisioned, cmd.ContainerID
		if w.PendingSpec() {
			// The coalesced configures: exactly one follow-up attempt with the newest spec.
			// The container it reported is replaced by the follow-up attempt.
			ev.Type, ev.Generation, ev.ContainerID, dst = ReprovisionStarted, w.Generation+1, "", Provisioning
			reason = fmt.Sprintf("spec version %d arrived during generation %d; applying it", w.SpecVersion, w.Generation)
		}
	case ProvisionFailed:
		ev.Type = ProvisionFailedEv
	case StopSucceeded:
		ev.Type = StoppedEv
	case StopFailed:
		ev.Type = StopFailedEv
	case DeleteSucceeded:
		ev.Type = DeletedEv
	case DeleteFailed:
		ev.Type = DeleteFailedEv
	case ContainerExited:
		ev.Type, ev.ExitCode = ContainerExitedEv, cmd.ExitCode
		reason = containerExitReason(cmd)
	case DeadlineExceeded:
		ev.Type = DeadlineExceededEv
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
	switch e.Type {
	case Created, StartRequested, RestartRequested, ReprovisionStarted:
		n.Status, n.AttemptSpecVersion = Provisioning, n.SpecVersion
	case Configured:
		if w.Status == Running {
			n.Status, n.AttemptSpecVersion = Provisioning, n.SpecVersion
		}
	case StopRequested:
		n.Status = Stopping
	case DeleteRequested:
		n.Status = Deleting
	case Provisioned:
		n.Status = Running
		if e.ContainerID != "" {
			n.ContainerID = e.ContainerID
		}
	case StoppedEv:
		n.Status = Stopped
	case DeletedEv:
		n.Status, n.ContainerID = Deleted, ""
	case ProvisionFailedEv, StopFailedEv, DeleteFailedEv, ContainerExitedEv, DeadlineExceededEv:
		n.Status, n.LastError = Failed, e.Reason
	}
	return n
}

// CommandFor reconstructs the command that would have produced e from a
// state at generation gen, for audits.
func CommandFor(e Event, prevGeneration uint64) Command {
	c := Command{Generation: e.Generation, Reason: e.Reason}
	user := func(t CommandType) Command { return Command{Type: t, Spec: e.Spec} }
	switch e.Type {
	case Created:
		return user(Create)
	case StartRequested:
		return user(Start)
	case StopRequested:
		return user(Stop)
	case RestartRequested:
		return user(Restart)
	case DeleteRequested:
		return user(Delete)
	case Configured:
		return user(Configure)
	case Provisioned:
		c.Type, c.ContainerID = ProvisionSucceeded, e.ContainerID
	case ReprovisionStarted:
		c.Type, c.Generation, c.Reason = ProvisionSucceeded, prevGeneration, ""
	case ProvisionFailedEv:
		c.Type = ProvisionFailed
	case StoppedEv:
		c.Type = StopSucceeded
	case StopFailedEv:
		c.Type = StopFailed
	case DeletedEv:
		c.Type = DeleteSucceeded
	case DeleteFailedEv:
		c.Type = DeleteFailed
	case ContainerExitedEv:
		c.Type, c.ExitCode, c.Reason = ContainerExited, e.ExitCode, ""
	case DeadlineExceededEv:
		c.Type = DeadlineExceeded
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
	d := Decide(w, cmd)
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

func reject(w Workspace, code Code, cmd CommandType, msg string) Decision {
	return Decision{Outcome: Rejected, Rejection: &Rejection{
		Code: code, Command: cmd, State: w.Status, Generation: w.Generation,
		SpecVersion: w.SpecVersion, Allowed: Allowed(w), Message: msg,
	}}
}
