package fsm_test

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/turnstile-dev/turnstile/fsm"
)

// This file holds DESIGN.md's lifecycle table as test data and checks fsm
// against it cell by cell. rapid_test.go reuses the same tables as its oracle.

const wsID = "alpha"

var (
	specA = fsm.Spec{Image: "busybox:1.36", Env: map[string]string{"MODE": "a"}, CPUs: 1,
		MemoryBytes: 64 << 20, Labels: map[string]string{"team": "a"}}
	specB = fsm.Spec{Image: "alpine:3.20", CPUs: 2}
)

// tb is what the shared checks need from *testing.T and *rapid.T alike.
type tb interface {
	Helper()
	Fatalf(format string, args ...any)
}

// want is the expected verdict on one command.
type want struct {
	outcome  fsm.Outcome
	event    fsm.EventType // Accepted
	status   fsm.Status    // Accepted: the status after Apply
	genDelta uint64        // Accepted: event generation minus current generation
	code     fsm.Code      // Rejected
}

func to(ev fsm.EventType, st fsm.Status, genDelta uint64) want {
	return want{outcome: fsm.Accepted, event: ev, status: st, genDelta: genDelta}
}

var (
	noop  = want{outcome: fsm.Noop}
	stale = want{outcome: fsm.Stale}
)

func rejected(code fsm.Code) want { return want{outcome: fsm.Rejected, code: code} }

// User cases: the five table commands plus configure with a new and with the
// current spec.
const (
	configureNew  = "configure_new_spec"
	configureSame = "configure_same_spec"
)

var userCases = []string{"create", "start", "stop", "restart", "delete", configureNew, configureSame}

// userTable is DESIGN.md's "Lifecycle" table, plus its configure rules.
var userTable = map[fsm.Status]map[string]want{
	fsm.None: {
		"create": to(fsm.Created, fsm.Provisioning, 1), "start": rejected(fsm.CodeNotFound),
		"stop": rejected(fsm.CodeNotFound), "restart": rejected(fsm.CodeNotFound), "delete": rejected(fsm.CodeNotFound),
		configureNew: rejected(fsm.CodeNotFound), configureSame: rejected(fsm.CodeNotFound),
	},
	fsm.Provisioning: {
		"create": rejected(fsm.CodeExists), "start": rejected(fsm.CodeBusy),
		"stop": to(fsm.StopRequested, fsm.Stopping, 1), "restart": rejected(fsm.CodeBusy),
		"delete":     to(fsm.DeleteRequested, fsm.Deleting, 1),
		configureNew: to(fsm.Configured, fsm.Provisioning, 0), configureSame: noop,
	},
	fsm.Running: {
		"create": rejected(fsm.CodeExists), "start": noop,
		"stop": to(fsm.StopRequested, fsm.Stopping, 1), "restart": to(fsm.RestartRequested, fsm.Provisioning, 1),
		"delete":     to(fsm.DeleteRequested, fsm.Deleting, 1),
		configureNew: to(fsm.Configured, fsm.Provisioning, 1), configureSame: noop,
	},
	fsm.Stopping: {
		"create": rejected(fsm.CodeExists), "start": rejected(fsm.CodeBusy),
		"stop": noop, "restart": rejected(fsm.CodeBusy),
		"delete":     to(fsm.DeleteRequested, fsm.Deleting, 1),
		configureNew: to(fsm.Configured, fsm.Stopping, 0), configureSame: noop,
	},
	fsm.Stopped: {
		"create": rejected(fsm.CodeExists), "start": to(fsm.StartRequested, fsm.Provisioning, 1),
		"stop": noop, "restart": to(fsm.RestartRequested, fsm.Provisioning, 1),
		"delete":     to(fsm.DeleteRequested, fsm.Deleting, 1),
		configureNew: to(fsm.Configured, fsm.Stopped, 0), configureSame: noop,
	},
	fsm.Failed: {
		"create": rejected(fsm.CodeExists), "start": to(fsm.StartRequested, fsm.Provisioning, 1),
		"stop": to(fsm.StopRequested, fsm.Stopping, 1), "restart": to(fsm.RestartRequested, fsm.Provisioning, 1),
		"delete":     to(fsm.DeleteRequested, fsm.Deleting, 1),
		configureNew: to(fsm.Configured, fsm.Failed, 0), configureSame: noop,
	},
	fsm.Deleting: {
		"create": rejected(fsm.CodeExists), "start": rejected(fsm.CodeGone),
		"stop": rejected(fsm.CodeGone), "restart": rejected(fsm.CodeGone), "delete": noop,
		configureNew: rejected(fsm.CodeGone), configureSame: rejected(fsm.CodeGone),
	},
	fsm.Deleted: {
		"create": to(fsm.Created, fsm.Provisioning, 1), "start": rejected(fsm.CodeGone),
		"stop": rejected(fsm.CodeGone), "restart": rejected(fsm.CodeGone), "delete": noop,
		configureNew: rejected(fsm.CodeGone), configureSame: rejected(fsm.CodeGone),
	},
}

// allowedTable is what each state's rejections must list: the user commands
// accepted or no-ops there.
var allowedTable = map[fsm.Status][]fsm.CommandType{
	fsm.None:         {fsm.Create},
	fsm.Provisioning: {fsm.Stop, fsm.Delete, fsm.Configure},
	fsm.Running:      {fsm.Start, fsm.Stop, fsm.Restart, fsm.Delete, fsm.Configure},
	fsm.Stopping:     {fsm.Stop, fsm.Delete, fsm.Configure},
	fsm.Stopped:      {fsm.Start, fsm.Stop, fsm.Restart, fsm.Delete, fsm.Configure},
	fsm.Failed:       {fsm.Start, fsm.Stop, fsm.Restart, fsm.Delete, fsm.Configure},
	fsm.Deleting:     {fsm.Delete},
	fsm.Deleted:      {fsm.Create, fsm.Delete},
}

// systemTable says where each system outcome of the current generation leads
// from each state; a missing entry means stale. (provision_succeeded with a
// newer spec pending starts a follow-up attempt instead: see expectSystem.)
var systemTable = map[fsm.Status]map[fsm.CommandType]fsm.Status{
	fsm.Provisioning: {fsm.ProvisionSucceeded: fsm.Running, fsm.ProvisionFailed: fsm.Failed, fsm.DeadlineExceeded: fsm.Failed},
	fsm.Running:      {fsm.ContainerExited: fsm.Failed},
	fsm.Stopping:     {fsm.StopSucceeded: fsm.Stopped, fsm.StopFailed: fsm.Failed, fsm.DeadlineExceeded: fsm.Failed},
	fsm.Deleting:     {fsm.DeleteSucceeded: fsm.Deleted, fsm.DeleteFailed: fsm.Failed, fsm.DeadlineExceeded: fsm.Failed},
}

var systemEvent = map[fsm.CommandType]fsm.EventType{
	fsm.ProvisionSucceeded: fsm.Provisioned, fsm.ProvisionFailed: fsm.ProvisionFailedEv,
	fsm.StopSucceeded: fsm.StoppedEv, fsm.StopFailed: fsm.StopFailedEv,
	fsm.DeleteSucceeded: fsm.DeletedEv, fsm.DeleteFailed: fsm.DeleteFailedEv,
	fsm.ContainerExited: fsm.ContainerExitedEv, fsm.DeadlineExceeded: fsm.DeadlineExceededEv,
}

// userCase turns a case name into the command it stands for, against w.
func userCase(w fsm.Workspace, name string) fsm.Command {
	switch name {
	case configureNew:
		spec := specB
		if w.Spec.Equal(specB) {
			spec = specA
		}
		return withSpec(command(w.ID, fsm.Configure), spec)
	case configureSame:
		return withSpec(command(w.ID, fsm.Configure), w.Spec)
	}
	return command(w.ID, fsm.CommandType(name))
}

// userCaseName classifies a user command the way userTable does.
func userCaseName(w fsm.Workspace, c fsm.Command) string {
	if c.Type != fsm.Configure {
		return string(c.Type)
	}
	if c.Spec != nil && c.Spec.Equal(w.Spec) {
		return configureSame
	}
	return configureNew
}

// expectUser is the table's verdict on a well-formed user command.
func expectUser(w fsm.Workspace, c fsm.Command) want {
	return userTable[w.Status][userCaseName(w, c)]
}

// expectSystem is DESIGN.md's verdict on a well-formed-but-for-generation
// system outcome.
func expectSystem(w fsm.Workspace, c fsm.Command) want {
	switch {
	case c.Generation == 0 || c.Generation > w.Generation:
		return rejected(fsm.CodeInvalid)
	case c.Generation < w.Generation:
		return stale
	}
	dst, ok := systemTable[w.Status][c.Type]
	if !ok {
		return stale
	}
	if c.Type == fsm.ProvisionSucceeded && w.SpecVersion > w.AttemptSpecVersion {
		return to(fsm.ReprovisionStarted, fsm.Provisioning, 1)
	}
	return to(systemEvent[c.Type], dst, 0)
}

func command(id string, t fsm.CommandType) fsm.Command {
	return fsm.Command{ID: "cmd-" + string(t), Type: t, Workspace: id}
}

func system(id string, t fsm.CommandType, gen uint64) fsm.Command {
	c := command(id, t)
	c.Generation = gen
	return c
}

func withSpec(c fsm.Command, s fsm.Spec) fsm.Command {
	s = s.Clone()
	c.Spec = &s
	return c
}

// history is a workspace's state and the events that made it.
type history struct {
	w      fsm.Workspace
	events []fsm.Event
}

// mustDo decides c, requires it accepted and legal, applies it and returns
// the event.
func (h *history) mustDo(t tb, c fsm.Command) fsm.Event {
	t.Helper()
	d := fsm.Decide(h.w, c)
	if d.Outcome != fsm.Accepted || d.Event == nil {
		t.Fatalf("%s in %s at generation %d: got %s (%s%s), want accepted", c.Type, h.w.Status, h.w.Generation, d.Outcome, d.Reason, rejectionText(d))
	}
	if err := fsm.Check(h.w, *d.Event); err != nil {
		t.Fatalf("%s in %s: its own event fails Check: %v", c.Type, h.w.Status, err)
	}
	next := fsm.Apply(h.w, *d.Event)
	if next.Seq != h.w.Seq+1 || next.Generation != d.Event.Generation {
		t.Fatalf("%s in %s: Apply gave seq %d, generation %d; want seq %d, generation %d",
			c.Type, h.w.Status, next.Seq, next.Generation, h.w.Seq+1, d.Event.Generation)
	}
	h.w = next
	h.events = append(h.events, *d.Event)
	return *d.Event
}

// mustReach drives a new workspace into st through real decisions. Every
// existing state is reached at generation 2 or more, so an older generation
// always exists.
func mustReach(t tb, st fsm.Status) *history {
	t.Helper()
	h := &history{w: fsm.Workspace{ID: wsID}}
	if st == fsm.None {
		return h
	}
	h.mustDo(t, withSpec(command(wsID, fsm.Create), specA)) // provisioning, gen 1
	h.mustDo(t, system(wsID, fsm.ProvisionSucceeded, 1))    // running, gen 1
	h.mustDo(t, command(wsID, fsm.Restart))                 // provisioning, gen 2
	if st == fsm.Provisioning {
		return h
	}
	h.mustDo(t, system(wsID, fsm.ProvisionSucceeded, 2)) // running, gen 2
	switch st {
	case fsm.Stopping, fsm.Stopped:
		h.mustDo(t, command(wsID, fsm.Stop)) // stopping, gen 3
		if st == fsm.Stopped {
			h.mustDo(t, system(wsID, fsm.StopSucceeded, 3))
		}
	case fsm.Failed:
		c := system(wsID, fsm.ContainerExited, 2)
		c.ExitCode = new(137)
		h.mustDo(t, c)
	case fsm.Deleting, fsm.Deleted:
		h.mustDo(t, command(wsID, fsm.Delete)) // deleting, gen 3
		if st == fsm.Deleted {
			h.mustDo(t, system(wsID, fsm.DeleteSucceeded, 3))
		}
	}
	if h.w.Status != st {
		t.Fatalf("mustReach(%s) reached %s", st, h.w.Status)
	}
	return h
}

func rejectionText(d fsm.Decision) string {
	if d.Rejection == nil {
		return ""
	}
	return d.Rejection.Error()
}

func cloneWorkspace(w fsm.Workspace) fsm.Workspace {
	w.Spec = w.Spec.Clone()
	return w
}

// checkDecision verifies d, the verdict on c in w, against want, and
// everything every verdict of that kind must carry.
func checkDecision(t tb, w fsm.Workspace, c fsm.Command, d fsm.Decision, wt want) {
	t.Helper()
	what := fmt.Sprintf("%s (generation %d) in %s at generation %d", c.Type, c.Generation, w.Status, w.Generation)
	if d.Outcome != wt.outcome {
		t.Fatalf("%s: outcome %s (%s%s), want %s", what, d.Outcome, d.Reason, rejectionText(d), wt.outcome)
	}
	switch d.Outcome {
	case fsm.Accepted:
		if d.Event == nil || d.Rejection != nil {
			t.Fatalf("%s: accepted with event %v, rejection %v", what, d.Event, d.Rejection)
		}
		ev := *d.Event
		if ev.Type != wt.event || ev.Generation != w.Generation+wt.genDelta {
			t.Fatalf("%s: event %s at generation %d, want %s at generation %d", what, ev.Type, ev.Generation, wt.event, w.Generation+wt.genDelta)
		}
		if err := fsm.Check(w, ev); err != nil {
			t.Fatalf("%s: its event fails Check: %v", what, err)
		}
		next := fsm.Apply(w, ev)
		if next.Status != wt.status || next.Generation != ev.Generation || next.Seq != w.Seq+1 {
			t.Fatalf("%s: Apply gave %s, generation %d, seq %d; want %s, generation %d, seq %d",
				what, next.Status, next.Generation, next.Seq, wt.status, ev.Generation, w.Seq+1)
		}
		switch ev.Type {
		case fsm.Created, fsm.Configured:
			wantSpec := fsm.Spec{}
			if c.Spec != nil {
				wantSpec = *c.Spec
			}
			if ev.SpecVersion != w.SpecVersion+1 || !next.Spec.Equal(wantSpec) {
				t.Fatalf("%s: spec version %d, spec %+v; want %d, %+v", what, ev.SpecVersion, next.Spec, w.SpecVersion+1, wantSpec)
			}
		default:
			if ev.SpecVersion != w.SpecVersion || ev.Spec != nil || !next.Spec.Equal(w.Spec) {
				t.Fatalf("%s: changed the spec (version %d -> %d)", what, w.SpecVersion, ev.SpecVersion)
			}
		}
		if next.Status == fsm.Provisioning && next.Status != w.Status && next.AttemptSpecVersion != next.SpecVersion {
			t.Fatalf("%s: new attempt runs spec %d of %d", what, next.AttemptSpecVersion, next.SpecVersion)
		}
		if next.Status == fsm.Failed && w.Status != fsm.Failed && (ev.Reason == "" || next.LastError != ev.Reason) {
			t.Fatalf("%s: failed with reason %q, last error %q", what, ev.Reason, next.LastError)
		}
	case fsm.Noop, fsm.Stale:
		if d.Event != nil || d.Rejection != nil {
			t.Fatalf("%s: %s with event %v, rejection %v", what, d.Outcome, d.Event, d.Rejection)
		}
		if !strings.Contains(d.Reason, w.ID) {
			t.Fatalf("%s: %s reason %q does not name workspace %s", what, d.Outcome, d.Reason, w.ID)
		}
	case fsm.Rejected:
		r := d.Rejection
		if r == nil || d.Event != nil {
			t.Fatalf("%s: rejected with event %v, rejection %v", what, d.Event, r)
		}
		if r.Code != wt.code || r.Command != c.Type || r.State != w.Status ||
			r.Generation != w.Generation || r.SpecVersion != w.SpecVersion {
			t.Fatalf("%s: rejection %+v, want code %s, command %s, state %s, generation %d, spec version %d",
				what, *r, wt.code, c.Type, w.Status, w.Generation, w.SpecVersion)
		}
		if allowed, ok := allowedTable[w.Status]; ok && !slices.Equal(r.Allowed, allowed) {
			t.Fatalf("%s: allowed %v, want %v", what, r.Allowed, allowed)
		}
		if r.Message == "" || (r.Code != fsm.CodeInvalid && !strings.Contains(r.Message, w.ID)) {
			t.Fatalf("%s: message %q does not name workspace %s", what, r.Message, w.ID)
		}
		if fsm.RejectionCode(r) != r.Code || !strings.Contains(r.Error(), string(r.Code)) {
			t.Fatalf("%s: Error() %q, RejectionCode %q", what, r.Error(), fsm.RejectionCode(r))
		}
	default:
		t.Fatalf("%s: unknown outcome %q", what, d.Outcome)
	}
}

// decideAndCheck decides c in w and checks the verdict, and that deciding is
// pure: w is untouched and a second decision is the same.
func decideAndCheck(t tb, w fsm.Workspace, c fsm.Command, wt want) fsm.Decision {
	t.Helper()
	before := cloneWorkspace(w)
	d := fsm.Decide(w, c)
	if !reflect.DeepEqual(w, before) {
		t.Fatalf("Decide changed its workspace: %+v -> %+v", before, w)
	}
	if again := fsm.Decide(w, c); !reflect.DeepEqual(d, again) {
		t.Fatalf("Decide is not deterministic: %+v then %+v", d, again)
	}
	checkDecision(t, w, c, d, wt)
	return d
}

func TestDecideUserCommands(t *testing.T) {
	for _, st := range fsm.Statuses() {
		if len(userTable[st]) != len(userCases) {
			t.Fatalf("userTable[%s] has %d cases, want %d", st, len(userTable[st]), len(userCases))
		}
		t.Run(st.String(), func(t *testing.T) {
			for _, name := range userCases {
				t.Run(name, func(t *testing.T) {
					h := mustReach(t, st)
					decideAndCheck(t, h.w, userCase(h.w, name), userTable[st][name])
				})
			}
		})
	}
}

func TestAllowed(t *testing.T) {
	for _, st := range fsm.Statuses() {
		t.Run(st.String(), func(t *testing.T) {
			h := mustReach(t, st)
			if got := fsm.Allowed(h.w); !slices.Equal(got, allowedTable[st]) {
				t.Fatalf("Allowed = %v, want %v", got, allowedTable[st])
			}
			// The allowed list is exactly the table's accepted and no-op cells.
			var fromTable []fsm.CommandType
			for _, ct := range fsm.UserCommands() {
				name := string(ct)
				if ct == fsm.Configure {
					name = configureNew
				}
				if o := userTable[st][name].outcome; o == fsm.Accepted || o == fsm.Noop {
					fromTable = append(fromTable, ct)
				}
			}
			if !slices.Equal(fromTable, allowedTable[st]) {
				t.Fatalf("allowedTable[%s] = %v, but the table accepts %v", st, allowedTable[st], fromTable)
			}
		})
	}
}

func TestDecideSystemOutcomes(t *testing.T) {
	gens := []struct {
		name string
		gen  func(cur uint64) uint64
	}{
		{"current", func(cur uint64) uint64 { return cur }},
		{"older", func(cur uint64) uint64 { return cur - 1 }},
		{"newer", func(cur uint64) uint64 { return cur + 1 }},
		{"zero", func(uint64) uint64 { return 0 }},
	}
	for _, st := range fsm.Statuses() {
		t.Run(st.String(), func(t *testing.T) {
			for _, ct := range fsm.SystemCommands() {
				for _, g := range gens {
					t.Run(string(ct)+"/"+g.name, func(t *testing.T) {
						h := mustReach(t, st)
						if g.name == "older" && h.w.Generation < 2 {
							t.Skipf("%s is at generation %d: no older generation but 0", st, h.w.Generation)
						}
						c := system(h.w.ID, ct, g.gen(h.w.Generation))
						wt := expectSystem(h.w, c)
						// Spelled out, not only through expectSystem.
						switch g.name {
						case "newer", "zero":
							if wt.outcome != fsm.Rejected || wt.code != fsm.CodeInvalid {
								t.Fatalf("expectSystem says %+v", wt)
							}
						case "older":
							if wt.outcome != fsm.Stale {
								t.Fatalf("expectSystem says %+v", wt)
							}
						}
						d := decideAndCheck(t, h.w, c, wt)
						if d.Outcome == fsm.Accepted && ct == fsm.ProvisionSucceeded && d.Event.Type != fsm.Provisioned {
							t.Fatalf("no spec was pending, yet %s", d.Event.Type)
						}
					})
				}
			}
		})
	}
}

// TestConfigureCoalescing: however many configures arrive while provisioning,
// the in-flight attempt finishes and exactly one follow-up applies the newest.
func TestConfigureCoalescing(t *testing.T) {
	for n := 1; n <= 5; n++ {
		t.Run(fmt.Sprintf("%d_configures", n), func(t *testing.T) {
			h := mustReach(t, fsm.Provisioning)
			gen, attempt := h.w.Generation, h.w.AttemptSpecVersion
			var newest fsm.Spec
			for i := 1; i <= n; i++ {
				newest = fsm.Spec{Image: fmt.Sprintf("registry.example/app:%d", i), Env: map[string]string{"N": fmt.Sprint(i)}}
				sv := h.w.SpecVersion
				ev := h.mustDo(t, withSpec(command(wsID, fsm.Configure), newest))
				if ev.Type != fsm.Configured || ev.Generation != gen || ev.SpecVersion != sv+1 ||
					h.w.Status != fsm.Provisioning || h.w.AttemptSpecVersion != attempt || !h.w.PendingSpec() {
					t.Fatalf("configure %d: event %+v, state %+v", i, ev, h.w)
				}
				// An outcome of an older attempt still changes nothing.
				decideAndCheck(t, h.w, system(wsID, fsm.ProvisionFailed, gen-1), stale)
			}
			ev := h.mustDo(t, system(wsID, fsm.ProvisionSucceeded, gen))
			if ev.Type != fsm.ReprovisionStarted || ev.Generation != gen+1 || ev.Reason == "" {
				t.Fatalf("follow-up: %+v, want %s at generation %d with a reason", ev, fsm.ReprovisionStarted, gen+1)
			}
			if h.w.Status != fsm.Provisioning || h.w.AttemptSpecVersion != h.w.SpecVersion ||
				h.w.SpecVersion != attempt+uint64(n) || !h.w.Spec.Equal(newest) || h.w.PendingSpec() {
				t.Fatalf("follow-up state %+v: want provisioning with spec %d = %+v", h.w, attempt+uint64(n), newest)
			}
			// Exactly one follow-up: the old attempt's outcomes are now stale.
			for _, ct := range []fsm.CommandType{fsm.ProvisionSucceeded, fsm.ProvisionFailed, fsm.DeadlineExceeded} {
				decideAndCheck(t, h.w, system(wsID, ct, gen), stale)
			}
			ev = h.mustDo(t, system(wsID, fsm.ProvisionSucceeded, gen+1))
			if ev.Type != fsm.Provisioned || h.w.Status != fsm.Running || h.w.Generation != gen+1 || !h.w.Spec.Equal(newest) {
				t.Fatalf("after the follow-up: event %+v, state %+v", ev, h.w)
			}
			follow := 0
			for _, e := range h.events {
				if e.Type == fsm.ReprovisionStarted {
					follow++
				}
			}
			if follow != 1 {
				t.Fatalf("%d follow-up attempts, want 1", follow)
			}
			mustReplay(t, h)
		})
	}
}

// TestConfigureDuringFollowUp: a configure during the follow-up attempt owes
// one more attempt, not more.
func TestConfigureDuringFollowUp(t *testing.T) {
	h := mustReach(t, fsm.Provisioning)
	gen := h.w.Generation
	h.mustDo(t, withSpec(command(wsID, fsm.Configure), specB))
	h.mustDo(t, system(wsID, fsm.ProvisionSucceeded, gen)) // follow-up, gen+1
	h.mustDo(t, withSpec(command(wsID, fsm.Configure), specA))
	h.mustDo(t, withSpec(command(wsID, fsm.Configure), specB))
	if ev := h.mustDo(t, system(wsID, fsm.ProvisionSucceeded, gen+1)); ev.Type != fsm.ReprovisionStarted || ev.Generation != gen+2 {
		t.Fatalf("second follow-up: %+v", ev)
	}
	if ev := h.mustDo(t, system(wsID, fsm.ProvisionSucceeded, gen+2)); ev.Type != fsm.Provisioned {
		t.Fatalf("after the second follow-up: %+v", ev)
	}
	if h.w.Status != fsm.Running || !h.w.Spec.Equal(specB) || h.w.AttemptSpecVersion != h.w.SpecVersion {
		t.Fatalf("state %+v", h.w)
	}
	mustReplay(t, h)
}

func TestConfigureRunningRestarts(t *testing.T) {
	h := mustReach(t, fsm.Running)
	gen, sv := h.w.Generation, h.w.SpecVersion
	ev := h.mustDo(t, withSpec(command(wsID, fsm.Configure), specB))
	if ev.Type != fsm.Configured || ev.Generation != gen+1 || ev.SpecVersion != sv+1 {
		t.Fatalf("event %+v", ev)
	}
	if h.w.Status != fsm.Provisioning || !h.w.Spec.Equal(specB) || h.w.AttemptSpecVersion != sv+1 {
		t.Fatalf("state %+v: want provisioning with spec %d", h.w, sv+1)
	}
	// The running attempt's exit is stale now.
	decideAndCheck(t, h.w, system(wsID, fsm.ContainerExited, gen), stale)
	if ev := h.mustDo(t, system(wsID, fsm.ProvisionSucceeded, gen+1)); ev.Type != fsm.Provisioned || h.w.Status != fsm.Running {
		t.Fatalf("event %+v, state %+v", ev, h.w)
	}
	mustReplay(t, h)
}

// TestConfigureAppliedAtNextStart: a spec configured while stopping, stopped or
// failed is what the next start or restart provisions.
func TestConfigureAppliedAtNextStart(t *testing.T) {
	for _, st := range []fsm.Status{fsm.Stopping, fsm.Stopped, fsm.Failed} {
		for _, then := range []fsm.CommandType{fsm.Start, fsm.Restart} {
			t.Run(st.String()+"/"+string(then), func(t *testing.T) {
				h := mustReach(t, st)
				h.mustDo(t, withSpec(command(wsID, fsm.Configure), specB))
				if h.w.Status != st || !h.w.PendingSpec() {
					t.Fatalf("after configure: %+v", h.w)
				}
				if st == fsm.Stopping {
					h.mustDo(t, system(wsID, fsm.StopSucceeded, h.w.Generation))
				}
				gen := h.w.Generation
				h.mustDo(t, command(wsID, then))
				if h.w.Status != fsm.Provisioning || h.w.Generation != gen+1 || h.w.AttemptSpecVersion != h.w.SpecVersion || !h.w.Spec.Equal(specB) {
					t.Fatalf("after %s: %+v", then, h.w)
				}
				if ev := h.mustDo(t, system(wsID, fsm.ProvisionSucceeded, gen+1)); ev.Type != fsm.Provisioned {
					t.Fatalf("no follow-up was owed, yet %s", ev.Type)
				}
				mustReplay(t, h)
			})
		}
	}
}

func TestCreateAfterDeleted(t *testing.T) {
	for _, spec := range []*fsm.Spec{nil, &specB} {
		name := "without_spec"
		if spec != nil {
			name = "with_spec"
		}
		t.Run(name, func(t *testing.T) {
			h := mustReach(t, fsm.Deleted)
			prev := h.w
			c := command(wsID, fsm.Create)
			if spec != nil {
				c = withSpec(c, *spec)
			}
			ev := h.mustDo(t, c)
			wantSpec := fsm.Spec{}
			if spec != nil {
				wantSpec = *spec
			}
			if ev.Type != fsm.Created || h.w.Status != fsm.Provisioning || h.w.Generation != prev.Generation+1 ||
				h.w.Seq != prev.Seq+1 || h.w.SpecVersion != prev.SpecVersion+1 || h.w.AttemptSpecVersion != h.w.SpecVersion ||
				!h.w.Spec.Equal(wantSpec) {
				t.Fatalf("from %+v, event %+v gave %+v", prev, ev, h.w)
			}
			// The previous incarnation's outcomes are stale.
			decideAndCheck(t, h.w, system(wsID, fsm.DeleteSucceeded, prev.Generation), stale)
			decideAndCheck(t, h.w, system(wsID, fsm.DeleteFailed, prev.Generation), stale)
			h.mustDo(t, system(wsID, fsm.ProvisionSucceeded, h.w.Generation))
			mustReplay(t, h)
		})
	}
}

func TestFailuresCarryReasons(t *testing.T) {
	cases := []struct {
		name     string
		from     fsm.Status
		cmd      fsm.CommandType
		reason   string
		exitCode *int
		want     string
	}{
		{"provision_failed/reason", fsm.Provisioning, fsm.ProvisionFailed, "pull access denied for nope", nil, "pull access denied for nope"},
		{"provision_failed/no_reason", fsm.Provisioning, fsm.ProvisionFailed, "", nil, "provision_failed reported without a reason"},
		{"stop_failed/reason", fsm.Stopping, fsm.StopFailed, "container did not stop", nil, "container did not stop"},
		{"stop_failed/no_reason", fsm.Stopping, fsm.StopFailed, "", nil, "stop_failed reported without a reason"},
		{"delete_failed/reason", fsm.Deleting, fsm.DeleteFailed, "volume in use", nil, "volume in use"},
		{"delete_failed/no_reason", fsm.Deleting, fsm.DeleteFailed, "", nil, "delete_failed reported without a reason"},
		{"deadline_exceeded/provisioning", fsm.Provisioning, fsm.DeadlineExceeded, "provisioning deadline of 5m0s passed", nil, "provisioning deadline of 5m0s passed"},
		{"deadline_exceeded/stopping/no_reason", fsm.Stopping, fsm.DeadlineExceeded, "", nil, "deadline_exceeded reported without a reason"},
		{"deadline_exceeded/deleting", fsm.Deleting, fsm.DeadlineExceeded, "deleting deadline of 2m0s passed", nil, "deleting deadline of 2m0s passed"},
		{"container_exited/code", fsm.Running, fsm.ContainerExited, "", new(137), "container exited with code 137"},
		{"container_exited/code_0", fsm.Running, fsm.ContainerExited, "", new(0), "container exited with code 0"},
		{"container_exited/no_code", fsm.Running, fsm.ContainerExited, "", nil, "container exited"},
		{"container_exited/code_and_reason", fsm.Running, fsm.ContainerExited, "OOMKilled", new(1), "container exited with code 1: OOMKilled"},
		{"container_exited/reason_repeats", fsm.Running, fsm.ContainerExited, "container exited with code 2", new(2), "container exited with code 2"},
		{"container_exited/vanished", fsm.Running, fsm.ContainerExited, "container vanished", nil, "container exited: container vanished"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := mustReach(t, tc.from)
			c := system(wsID, tc.cmd, h.w.Generation)
			c.Reason, c.ExitCode = tc.reason, tc.exitCode
			ev := h.mustDo(t, c)
			if h.w.Status != fsm.Failed || ev.Reason != tc.want || h.w.LastError != tc.want {
				t.Fatalf("status %s, event reason %q, last error %q; want failed with %q", h.w.Status, ev.Reason, h.w.LastError, tc.want)
			}
			if tc.exitCode != nil && (ev.ExitCode == nil || *ev.ExitCode != *tc.exitCode) {
				t.Fatalf("exit code %v, want %d", ev.ExitCode, *tc.exitCode)
			}
			// The reason stays after recovery, for the read model.
			h.mustDo(t, command(wsID, fsm.Start))
			if h.w.Status != fsm.Provisioning || h.w.LastError != tc.want {
				t.Fatalf("after start: %s, last error %q", h.w.Status, h.w.LastError)
			}
			mustReplay(t, h)
		})
	}
}

// mustReplay replays h's events from a workspace that never existed, as an
// audit does, and requires every event legal and the same final state.
func mustReplay(t tb, h *history) {
	t.Helper()
	w := fsm.Workspace{ID: h.w.ID}
	for i, ev := range h.events {
		if err := fsm.Check(w, ev); err != nil {
			t.Fatalf("replay of event %d (%s): %v", i+1, ev.Type, err)
		}
		w = fsm.Apply(w, ev)
	}
	if !reflect.DeepEqual(w, h.w) {
		t.Fatalf("replay gave %+v, want %+v", w, h.w)
	}
}

// A provision_succeeded that carries a container id while a newer spec is
// pending starts the follow-up attempt; the event it records must still pass
// Check (the audit of real histories depends on it).
func TestReprovisionWithContainerIDPassesCheck(t *testing.T) {
	w := fsm.Workspace{ID: "re"}
	for _, c := range []fsm.Command{
		{ID: "a", Type: fsm.Create, Workspace: "re"},
		{ID: "b", Type: fsm.Configure, Workspace: "re", Spec: &fsm.Spec{Image: "next"}},
		{ID: "c", Type: fsm.ProvisionSucceeded, Workspace: "re", Generation: 1, ContainerID: "abc123"},
	} {
		d := fsm.Decide(w, c)
		if d.Outcome != fsm.Accepted {
			t.Fatalf("%s: %+v", c.Type, d)
		}
		if err := fsm.Check(w, *d.Event); err != nil {
			t.Fatalf("%s records an event Check refuses: %v", c.Type, err)
		}
		w = fsm.Apply(w, *d.Event)
	}
	if w.Status != fsm.Provisioning || w.Generation != 2 {
		t.Fatalf("after the follow-up began: %+v", w)
	}
}

// TestConfigureProfileOnly: a spec that changes only its security profile is
// a new spec (issue 12 item 7): configuring it restarts a running workspace
// rather than answering no-op.
func TestConfigureProfileOnly(t *testing.T) {
	h := mustReach(t, fsm.Running)
	looser := h.w.Spec.Clone()
	looser.Profile = "standard"
	if h.w.Spec.Equal(looser) || !looser.Equal(looser.Clone()) {
		t.Fatalf("Equal ignores the profile: %+v vs %+v", h.w.Spec, looser)
	}
	ev := h.mustDo(t, withSpec(command(wsID, fsm.Configure), looser))
	if ev.Type != fsm.Configured || ev.Spec == nil || ev.Spec.Profile != "standard" || h.w.Status != fsm.Provisioning {
		t.Fatalf("event %+v, state %+v: want configured with the profile, provisioning", ev, h.w)
	}
	mustReplay(t, h)
}

// An event recorded before a rule came in is judged by the rules it was
// taken under: a CPU limit below MinCPUs (legal until 2026-12) is refused
// in a new command, and Check still takes the events that hold one.
func TestCheckTakesSpecsOfEarlierRules(t *testing.T) {
	old := fsm.Spec{CPUs: 0.005}
	if d := fsm.Decide(fsm.Workspace{}, fsm.Command{ID: "c1", Type: fsm.Create, Workspace: "a", Spec: &old}); d.Outcome != fsm.Rejected {
		t.Fatalf("a new create with cpus %v: %s, want rejected", old.CPUs, d.Outcome)
	}
	created := fsm.Event{Type: fsm.Created, Generation: 1, SpecVersion: 1, Spec: &old}
	if err := fsm.Check(fsm.Workspace{ID: "a"}, created); err != nil {
		t.Fatalf("a created event of the earlier rules: %v", err)
	}
	w := fsm.Apply(fsm.Workspace{ID: "a"}, created)
	w = fsm.Apply(w, fsm.Event{Type: fsm.Provisioned, Generation: 1, SpecVersion: 1, ContainerID: "c"})
	older := fsm.Spec{CPUs: 0.007}
	configured := fsm.Event{Type: fsm.Configured, Generation: 2, SpecVersion: 2, Spec: &older}
	if err := fsm.Check(w, configured); err != nil {
		t.Fatalf("a configured event of the earlier rules: %v", err)
	}
	bad := fsm.Spec{CPUs: -1}
	if err := fsm.Check(fsm.Workspace{ID: "a"}, fsm.Event{Type: fsm.Created, Generation: 1, SpecVersion: 1, Spec: &bad}); err == nil {
		t.Fatal("Check took a spec no rule ever allowed (cpus -1)")
	}
}

// Known holds exactly the statuses Statuses lists.
func TestStatusKnown(t *testing.T) {
	for _, st := range fsm.Statuses() {
		if !st.Known() {
			t.Errorf("%q is in Statuses but not Known", st)
		}
	}
	for _, st := range []fsm.Status{"bogus", "Running", "running "} {
		if st.Known() {
			t.Errorf("%q is Known", st)
		}
	}
}
