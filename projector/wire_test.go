package projector

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/fsm"
)

// TestScanMatchesCodec holds the fast path of decode to its promise: what
// it accepts, the events package decodes to the same rows, with payload
// and spec documents equal as JSON values; and it accepts what this build
// writes.
func TestScanMatchesCodec(t *testing.T) {
	for _, s := range wireSeeds(t) {
		checkScan(t, []byte(s.doc), s.event)
		if _, ok := scanOne(s.doc, s.event); ok != s.fast {
			t.Errorf("fast path took it: %v, want %v: %s", ok, s.fast, s.doc)
		}
	}
}

// FuzzScan: the fast path never panics and never accepts what the events
// package decodes differently or refuses.
func FuzzScan(f *testing.F) {
	for _, s := range wireSeeds(f) {
		f.Add([]byte(s.doc), s.event)
	}
	f.Fuzz(func(t *testing.T, b []byte, event bool) { checkScan(t, b, event) })
}

type wireSeed struct {
	doc   string
	event bool // an envelope, else an outcome record
	fast  bool // must take the fast path
}

// wireSeeds are documents as this build writes them, which the fast path
// must take, and variants it must leave to the events package or decode
// exactly as that does.
func wireSeeds(tb testing.TB) []wireSeed {
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 123456789, time.UTC)
	exit := 137
	var seeds []wireSeed
	var w fsm.Workspace
	cmds := []fsm.Command{
		{Type: fsm.Create, Actor: "alice", Spec: &fsm.Spec{Image: "registry.local/dev:1", Env: map[string]string{"B": "2", "A": "1"},
			CPUs: 1.5, MemoryBytes: 512 << 20, Labels: map[string]string{"team": "x"}, Profile: "standard"}},
		{Type: fsm.ProvisionSucceeded, ContainerID: "ctr-1"},
		{Type: fsm.ContainerExited, ExitCode: &exit, Reason: "oom killed"},
		{Type: fsm.Start},
		{Type: fsm.ProvisionFailed, Reason: "pull failed: ünïcode"},
		{Type: fsm.Configure, Spec: &fsm.Spec{CPUs: 0.25}},
		{Type: fsm.Configure, Spec: &fsm.Spec{}},
		{Type: fsm.Delete},
		{Type: fsm.DeleteSucceeded},
		{Type: fsm.Create},
	}
	for i, c := range cmds {
		c.ID, c.Workspace = "c"+strings.Repeat("x", i), "ws-1"
		if c.Type.IsSystem() {
			c.Generation = w.Generation
		}
		d := fsm.Decide(w, c)
		if d.Outcome != fsm.Accepted {
			tb.Fatalf("%s in %s: %s", c.Type, w.Status, d.Outcome)
		}
		env := events.NewEnvelope("e"+c.ID, w, *d.Event, c, t0.Add(time.Duration(i)*time.Second))
		b, err := events.Codec{}.Encode(env)
		if err != nil {
			tb.Fatal(err)
		}
		fast := !bytes.Contains(b, []byte(`\`))
		seeds = append(seeds, wireSeed{string(b), true, fast})
		w = env.State
		o := events.OutcomeRecord{CommandID: c.ID, Workspace: c.Workspace, CommandType: c.Type, Actor: c.Actor,
			Outcome: fsm.Accepted, EventSeq: env.Seq, Generation: w.Generation, State: w.Status,
			CommandGeneration: c.Generation, ReceivedAt: t0, DecidedAt: t0.Add(time.Millisecond)}
		if b, err = events.EncodeOutcome(o); err != nil {
			tb.Fatal(err)
		}
		seeds = append(seeds, wireSeed{string(b), false, true})
	}
	rejected := fsm.Decide(w, fsm.Command{ID: "c-r", Workspace: "ws-1", Type: fsm.Create})
	for _, rej := range []*fsm.Rejection{rejected.Rejection, fsm.Invalid(fsm.Start, "bad"), {Code: fsm.CodeBusy, Message: "busy"}} {
		o := events.OutcomeRecord{CommandID: "c-r", Workspace: "ws-1", CommandType: fsm.Create, Outcome: fsm.Rejected,
			Rejection: rej, Generation: 3, State: fsm.Provisioning, ReceivedAt: t0, DecidedAt: t0}
		b, err := events.EncodeOutcome(o)
		if err != nil {
			tb.Fatal(err)
		}
		seeds = append(seeds, wireSeed{string(b), false, true})
	}
	ev := seeds[0].doc // the created event, with a full spec
	out := seeds[1].doc
	// Variants: (old, new, "fast" if the fast path takes it).
	variant := func(event bool, doc string, v [3]string) {
		if !strings.Contains(doc, v[0]) {
			tb.Fatalf("seed lacks %q: %s", v[0], doc)
		}
		seeds = append(seeds, wireSeed{doc: strings.Replace(doc, v[0], v[1], 1), event: event, fast: v[2] == "fast"})
	}
	for _, v := range [][3]string{
		{`"cpus":1.5`, `"cpus":1.50`, ""},
		{`"cpus":1.5`, `"cpus":15e-1`, ""},
		{`"cpus":1.5`, `"cpus":0`, ""},
		{`"cpus":1.5`, `"cpus":-0.0`, ""},
		{`"cpus":1.5`, `"cpus":null`, ""},
		{`"memory_bytes":536870912`, `"memory_bytes":0`, ""},
		{`"memory_bytes":536870912`, `"memory_bytes":-0`, ""},
		{`"memory_bytes":536870912`, `"memory_bytes":5.0`, ""},
		{`"memory_bytes":536870912`, `"memory_bytes":0536870912`, ""},
		{`"image":"registry.local/dev:1"`, `"image":""`, ""},
		{`"image":"registry.local/dev:1"`, `"Image":"registry.local/dev:1"`, ""},
		{`"image":"registry.local/dev:1"`, `"image":"registry.local/dev:1","image":"x"`, ""},
		{`"image":"registry.local/dev:1"`, `"image":"reg\u0069stry"`, ""},
		{`"image":"registry.local/dev:1"`, "\"image\":\"r\xffx\""},
		{`"env":{"A":"1","B":"2"}`, `"env":{}`, ""},
		{`"env":{"A":"1","B":"2"}`, `"env":null`, ""},
		{`"env":{"A":"1","B":"2"}`, `"env":{"A":"1","A":"2"}`, "fast"},
		{`"env":{"A":"1","B":"2"}`, `"env":{"A":null}`, ""},
		{`"env":{"A":"1","B":"2"}`, `"env":{"A":""}`, "fast"},
		{`"env":{"A":"1","B":"2"}`, `"env":{"A":1}`, ""},
		{`"labels":{"team":"x"}`, `"labels":{"team":"x"},"extra":1`, ""},
		{`"schema_version":1`, `"schema_version":2`, ""},
		{`"schema_version":1`, `"schema_version":0`, ""},
		{`"schema_version":1`, `"schema_version":1.0`, ""},
		{`"seq":1`, `"seq":0`, ""},
		{`"seq":1`, `"seq":-1`, ""},
		{`"seq":1`, `"seq":18446744073709551616`, ""},
		{`"seq":1`, `"seq":18446744073709551615`, "fast"},
		{`"type":"workspace.created"`, `"type":"workspace.rebooted"`, ""},
		{`"workspace":"ws-1"`, `"workspace":"WS_1"`, ""},
		{`"actor":"alice"`, `"actor":""`, "fast"},
		{`"actor":"alice"`, `"actor":null`, ""},
		{`"actor":"alice"`, `"actor":"a\u003c"`, ""},
		{`"time":"2026-03-01T12:00:00.123456789Z"`, `"time":"2026-03-01T13:00:00.123456789+01:00"`, "fast"},
		{`"time":"2026-03-01T12:00:00.123456789Z"`, `"time":"2026-02-30T12:00:00Z"`, ""},
		{`"time":"2026-03-01T12:00:00.123456789Z"`, `"time":null`, ""},
		{`"payload":{`, `"payload":{"reason":"",`, ""},
		{`"payload":{`, `"payload":{"exit_code":0,`, "fast"},
		{`"payload":{`, `"payload":{"exit_code":-0,`, ""},
		{`"payload":{`, `"payload":{"container_id":"c",`, "fast"},
		{`"payload":{`, `"payload":{"spec":{},`, ""},
		{`"payload":{`, `"payload" : { `, "fast"},
		{`"state":{`, `"state":{"last_error":"",`, "fast"},
		{`"state":{`, `"state":{"id":"x","id":"y",`, ""},
		{`"state":{`, `"payload":{},"state":{`, ""},
		{`"spec_version":1,"spec":{`, `"spec_version":1,"spec":{},"spec":{`, ""},
		{`{"id"`, ` {"id"`, "fast"},
		{`}}`, `}} `, "fast"},
		{`}}`, `}}}`, ""},
		{`}}`, `}},`, ""},
		{`}}`, `}`, ""},
	} {
		variant(true, ev, v)
	}
	for _, v := range [][3]string{
		{`"outcome":"accepted"`, `"outcome":"maybe"`, ""},
		{`"outcome":"accepted"`, `"Outcome":"accepted"`, ""},
		{`"outcome":"accepted"`, `"outcome":"accepted","extra":[1,{"a":null}]`, ""},
		{`"outcome":"accepted"`, `"outcome":"accepted","rejection":null`, ""},
		{`"outcome":"accepted"`, `"outcome":"accepted","rejection":{"code":"busy","allowed":null,"message":"m"}`, "fast"},
		{`"outcome":"accepted"`, `"outcome":"accepted","rejection":{"code":"busy","allowed":["start", "stop"]}`, "fast"},
		{`"outcome":"accepted"`, `"outcome":"accepted","rejection":{"code":"busy","allowed":[1]}`, ""},
		{`"outcome":"accepted"`, `"outcome":"accepted","rejection":{"code":"busy"},"rejection":{"message":"m"}`, ""},
		{`"event_seq":1`, `"event_seq":"1"`, ""},
		{`"generation":1`, `"generation":1,"reason":"r\u00e9"`, ""},
		{`"received_at":"2026-03-01T12:00:00.123456789Z"`, `"received_at":"2026-03-01T12:00:00.123456789z"`, ""},
	} {
		variant(false, out, v)
	}
	return seeds
}

func scanOne(doc string, event bool) (any, bool) {
	if event {
		return scanEvent(7, []byte(doc))
	}
	return scanOutcome(7, []byte(doc))
}

// checkScan decodes b both ways and fails if the fast path accepts what
// the events package refuses or decodes differently.
func checkScan(t *testing.T, b []byte, event bool) {
	t.Helper()
	if !event {
		fast, ok := scanOutcome(7, b)
		if !ok {
			return
		}
		o, err := events.DecodeOutcome(b)
		if err != nil {
			t.Fatalf("fast path accepted what DecodeOutcome refuses (%v): %s", err, b)
		}
		if slow := outcomeRow(7, o); !reflect.DeepEqual(fast, slow) {
			t.Fatalf("outcome %s\nfast %+v\nslow %+v", b, fast, slow)
		}
		return
	}
	fast, ok := scanEvent(7, b)
	if !ok {
		return
	}
	env, err := events.Codec{}.Decode(b)
	if err != nil {
		t.Fatalf("fast path accepted what Codec.Decode refuses (%v): %s", err, b)
	}
	env.StreamSeq = 7
	slow, err := factsOf(&env, "", "")
	if err != nil {
		t.Fatal(err)
	}
	spec, err := specJSON(&slow.state)
	if err != nil {
		t.Fatal(err)
	}
	if !sameJSON(t, fast.state.SpecJSON, spec) || !sameJSON(t, fast.row.Payload, slow.row.Payload) {
		t.Fatalf("documents differ: %s\nfast spec %s payload %s\nslow spec %s payload %s", b,
			fast.state.SpecJSON, fast.row.Payload, spec, slow.row.Payload)
	}
	fast.state.SpecJSON, fast.row.Payload = "", ""
	slow.state.Spec, slow.row.Payload = fsm.Spec{}, ""
	if !reflect.DeepEqual(fast, slow) {
		t.Fatalf("event %s\nfast %+v\nslow %+v", b, fast, slow)
	}
}

// sameJSON compares two documents as jsonb would, or more strictly:
// numbers by their text, strings by value, objects without order, a
// repeated key by its last value.
func sameJSON(t *testing.T, a, b string) bool {
	t.Helper()
	decode := func(s string) any {
		d := json.NewDecoder(strings.NewReader(s))
		d.UseNumber()
		var v any
		if err := d.Decode(&v); err != nil {
			t.Fatalf("%v: %s", err, s)
		}
		return v
	}
	return reflect.DeepEqual(decode(a), decode(b))
}
