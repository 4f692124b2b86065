package fsm_test

import (
	"encoding/json"
	"math"
	"slices"
	"testing"

	"github.com/turnstile-dev/turnstile/fsm"
)

// fuzzTypes are the command types a fuzzed index picks from; an index past
// the end uses the fuzzed type string instead.
var fuzzTypes = append(fsm.UserCommands(), fsm.SystemCommands()...)

var knownCodes = []fsm.Code{fsm.CodeNotFound, fsm.CodeExists, fsm.CodeBusy, fsm.CodeGone, fsm.CodeInvalid}

// FuzzDecide: Decide never panics, and every verdict is well-formed: a
// rejection is typed and says why, an accepted event is one Check accepts
// from the same state.
func FuzzDecide(f *testing.F) {
	type seed struct {
		typeIdx                      uint8
		typ, workspace, id, actor    string
		status                       uint8
		wGen, cmdGen, specV, attempt uint64
		hasSpec, sameSpec            bool
		image                        string
		cpus                         float64
		mem                          int64
		envKey, envVal, reason       string
		hasExit                      bool
		exit                         int
	}
	for _, s := range []seed{
		{typeIdx: 0, workspace: "alpha", id: "c1", status: 0},                                // create in none
		{typeIdx: 0, workspace: "alpha", id: "c1", status: 7, wGen: 3, specV: 2, attempt: 2}, // create after deleted
		{typeIdx: 3, workspace: "alpha", id: "c2", status: 1, wGen: 2, specV: 1, attempt: 1}, // restart while provisioning
		{typeIdx: 5, workspace: "alpha", id: "c3", status: 2, wGen: 2, specV: 1, attempt: 1, hasSpec: true, image: "busybox", cpus: 1, mem: 64 << 20, envKey: "A", envVal: "b"},
		{typeIdx: 5, workspace: "alpha", id: "c3", status: 1, wGen: 2, specV: 1, attempt: 1, hasSpec: true, sameSpec: true},
		{typeIdx: 6, workspace: "alpha", id: "c4", status: 1, wGen: 2, cmdGen: 2, specV: 3, attempt: 1}, // follow-up owed
		{typeIdx: 7, workspace: "alpha", id: "c5", status: 1, wGen: 4, cmdGen: 3, reason: "boom"},       // stale failure
		{typeIdx: 12, workspace: "alpha", id: "c6", status: 2, wGen: 4, cmdGen: 4, hasExit: true, exit: 137},
		{typeIdx: 13, workspace: "alpha", id: "c7", status: 6, wGen: 4, cmdGen: 5},
		{typeIdx: 5, workspace: "alpha", id: "c9", status: 4, wGen: 2, hasSpec: true, sameSpec: true, cpus: math.NaN()},
		{typeIdx: 200, typ: "launch", workspace: "Alpha.*", id: "c 8", status: 9},
	} {
		f.Add(s.typeIdx, s.typ, s.workspace, s.id, s.actor, s.status, s.wGen, s.cmdGen, s.specV, s.attempt,
			s.hasSpec, s.sameSpec, s.image, s.cpus, s.mem, s.envKey, s.envVal, s.reason, s.hasExit, s.exit)
	}
	f.Fuzz(func(t *testing.T, typeIdx uint8, typ, workspace, id, actor string, status uint8,
		wGen, cmdGen, specV, attempt uint64, hasSpec, sameSpec bool, image string, cpus float64,
		mem int64, envKey, envVal, reason string, hasExit bool, exit int) {
		c := fsm.Command{ID: id, Type: fsm.CommandType(typ), Workspace: workspace, Actor: actor,
			Generation: cmdGen, Reason: reason}
		if int(typeIdx) < len(fuzzTypes) {
			c.Type = fuzzTypes[typeIdx]
		}
		spec := fsm.Spec{Image: image, CPUs: cpus, MemoryBytes: mem}
		if envKey != "" {
			spec.Env = map[string]string{envKey: envVal}
		}
		if hasSpec {
			c.Spec = &spec
		}
		if hasExit {
			c.ExitCode = &exit
		}
		// Statuses past the known ones stand for a corrupt state.
		st := fsm.Status("corrupt")
		if sts := fsm.Statuses(); int(status)%(len(sts)+1) < len(sts) {
			st = sts[int(status)%(len(sts)+1)]
		}
		w := fsm.Workspace{ID: workspace, Status: st, Generation: wGen, SpecVersion: specV,
			AttemptSpecVersion: attempt, LastError: reason}
		if sameSpec {
			w.Spec = spec.Clone()
		}

		d := fsm.Decide(w, c)

		switch d.Outcome {
		case fsm.Rejected:
			r := d.Rejection
			if r == nil || d.Event != nil {
				t.Fatalf("rejected with event %v, rejection %v", d.Event, r)
			}
			if !slices.Contains(knownCodes, r.Code) || r.Message == "" || r.Allowed == nil {
				t.Fatalf("rejection %+v: want a known code, a message and an allowed list", *r)
			}
			if r.State != w.Status || r.Generation != w.Generation || r.SpecVersion != w.SpecVersion {
				t.Fatalf("rejection %+v does not carry the state %s/%d/%d", *r, w.Status, w.Generation, w.SpecVersion)
			}
		case fsm.Accepted:
			if d.Event == nil || d.Rejection != nil {
				t.Fatalf("accepted with event %v, rejection %v", d.Event, d.Rejection)
			}
			ev := *d.Event
			if err := fsm.Check(w, ev); err != nil {
				t.Fatalf("accepted %s from %s fails Check: %v", ev.Type, w.Status, err)
			}
			next := fsm.Apply(w, ev)
			if next.Generation != ev.Generation || next.Seq != w.Seq+1 {
				t.Fatalf("Apply(%s) gave generation %d, seq %d", ev.Type, next.Generation, next.Seq)
			}
			if next.Status == fsm.Failed && w.Status != fsm.Failed && (ev.Reason == "" || next.LastError != ev.Reason) {
				t.Fatalf("%s failed the workspace with reason %q", ev.Type, ev.Reason)
			}
			// Events are stored as JSON: an accepted one must encode.
			if _, err := json.Marshal(ev); err != nil {
				t.Fatalf("accepted %s cannot be recorded: %v", ev.Type, err)
			}
			// Generations never go back. (At math.MaxUint64 the next one would
			// wrap to 0; 2^64 attempts are out of reach, so that is not asserted.)
			if w.Generation < math.MaxUint64 && ev.Generation != w.Generation && ev.Generation != w.Generation+1 {
				t.Fatalf("%s moved generation %d to %d", ev.Type, w.Generation, ev.Generation)
			}
			if !ev.Type.Known() {
				t.Fatalf("event %+v", ev)
			}
		case fsm.Noop, fsm.Stale:
			if d.Event != nil || d.Rejection != nil || d.Reason == "" {
				t.Fatalf("%s with event %v, rejection %v, reason %q", d.Outcome, d.Event, d.Rejection, d.Reason)
			}
		default:
			t.Fatalf("unknown outcome %q", d.Outcome)
		}

		// The verdict agrees with Validate.
		verr := c.Validate()
		if verr != nil && (d.Outcome != fsm.Rejected || d.Rejection.Code != fsm.CodeInvalid) {
			t.Fatalf("Validate refused (%v) but Decide said %s", verr, d.Outcome)
		}
		if verr == nil && c.Type.IsSystem() && c.Generation < w.Generation && d.Outcome != fsm.Stale {
			t.Fatalf("%s for generation %d at generation %d: %s, want stale", c.Type, c.Generation, w.Generation, d.Outcome)
		}
	})
}
