package events_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/fsm"
)

// Seeds shared by the fuzz targets; testdata/fuzz/<target> holds more.
var commandSeeds = []string{
	`{"id":"c1","type":"create","workspace":"ws-1"}`,
	`{"id":"c2","type":"create","workspace":"ws-1","actor":"alice","spec":{"image":"alpine:3","env":{"A":"1"},"cpus":1.5,"memory_bytes":67108864,"labels":{"team":"x"}}}`,
	`{"id":"c3","type":"start","workspace":"ws-1"}`,
	`{"id":"c4","type":"stop","workspace":"ws-1"}`,
	`{"id":"c5","type":"restart","workspace":"ws-1"}`,
	`{"id":"c6","type":"delete","workspace":"ws-1"}`,
	`{"id":"c7","type":"configure","workspace":"ws-1","spec":{}}`,
	`{"id":"c8","type":"provision_succeeded","workspace":"ws-1","generation":1}`,
	`{"id":"c9","type":"provision_failed","workspace":"ws-1","generation":2,"reason":"image pull"}`,
	`{"id":"c10","type":"container_exited","workspace":"ws-1","generation":3,"exit_code":137}`,
	`{"id":"c11","type":"deadline_exceeded","workspace":"ws-1","generation":18446744073709551615}`,
	`{"id":"c12","type":"stop_succeeded","workspace":"a","generation":1}`,
	`{"id":"c13","type":"delete_failed","workspace":"ws-1","generation":1,"reason":"busy"}`,
	`{"id":"c1","type":"create","workspace":"ws-1"`,                                // truncated
	`{"id":"c1","type":"create","workspace":"ws-1"}]`,                              // trailing ]
	`{"id":"c1","type":"create","workspace":"ws-1"} {}`,                            // trailing value
	`{"id":"c1","type":"create","workspace":"wš-1"}`,                               // unicode id
	`{"id":"c1","type":"create","workspace":"ws.1"}`,                               // dot
	`{"id":"c1","type":"create","workspace":"ws-1","spec":null}`,                   // null spec
	`{"id":"c1","type":"configure","workspace":"ws-1","spec":null}`,                // configure without spec
	`{"id":"c1","type":"create","workspace":"ws-1","spec":{"memory_bytes":-1}}`,    // negative memory
	`{"id":"c1","type":"create","workspace":"ws-1","spec":{"cpus":1e400}}`,         // huge number
	`{"id":"c1","type":"create","workspace":"ws-1","spec":{"memory_bytes":1e30}}`,  // float for int
	`{"id":"c1","type":"create","workspace":"ws-1","spec":{"env":{"A":{"b":{}}}}}`, // nested object
	`{"id":"c1","id":"c2","type":"create","workspace":"ws-1","workspace":"ws-2"}`,  // duplicate keys
	`{"ID":"c1","TYPE":"create","Workspace":"ws-1"}`,                               // case-folded keys
	`{"id":"c1","type":"create","workspace":"ws-1","extra":true}`,                  // unknown field
	`{"id":"c1","type":"reboot","workspace":"ws-1"}`,                               // unknown type
	`{"id":"c1","type":"start","workspace":"ws-1","spec":{}}`,                      // spec on start
	`{"id":"c1","type":"start","workspace":"ws-1","generation":1}`,                 // generation on a user command
	`{"id":"c1","type":"stop","workspace":"ws-1","exit_code":1}`,                   // exit code on a user command
	`{"id":"c1","type":"create","workspace":"ws-1","spec":{"env":{"A":"\u003c\u2028"}}}`,
	`{"id":"c1","type":"create","workspace":"ws-1","spec":{"labels":{"turnstile.x":"y"}}}`,
	`{"id":"c1","type":"create","workspace":"ws-1","spec":{"cpus":-0}}`,
	`{"id":"c1","type":"create","workspace":"ws-1","spec":{"env":{}}}`,
	`{"id":"bad id","type":"create","workspace":"ws-1"}`,
	`{"id":"","type":"create","workspace":"ws-1"}`,
	`null`,
	`[]`,
	`"create"`,
	``,
	"{\"id\":\"c1\",\"type\":\"create\",\"workspace\":\"ws-1\",\"actor\":\"\xff\xfe\"}",
}

// FuzzDecodeCommand: DecodeCommand never panics; what it accepts is valid,
// belongs to the subject's workspace and survives a round trip; what it
// refuses is a *fsm.Rejection with code invalid and a message.
func FuzzDecodeCommand(f *testing.F) {
	for _, s := range commandSeeds {
		f.Add([]byte(s), "")
		f.Add([]byte(s), "ws-1")
	}
	f.Fuzz(func(t *testing.T, b []byte, subject string) {
		c, err := events.DecodeCommand(b, subject)
		if err != nil {
			var rej *fsm.Rejection
			if !errors.As(err, &rej) {
				t.Fatalf("error %T %v is not a *fsm.Rejection", err, err)
			}
			if rej.Code != fsm.CodeInvalid || rej.Message == "" {
				t.Fatalf("rejection %+v: want code invalid and a message", rej)
			}
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("decoded command does not validate: %v", err)
		}
		if subject != "" && c.Workspace != subject {
			t.Fatalf("decoded command for %q on subject %q", c.Workspace, subject)
		}
		enc, err := events.EncodeCommand(c)
		if err != nil {
			t.Fatalf("decoded command %+v does not encode: %v", c, err)
		}
		c2, err := events.DecodeCommand(enc, c.Workspace)
		if err != nil {
			t.Fatalf("re-encoded command %s does not decode: %v", enc, err)
		}
		if !commandsEqual(c, c2) {
			t.Fatalf("round trip changed the command:\n%+v\n%+v", c, c2)
		}
		enc2, err := events.EncodeCommand(c2)
		if err != nil || !bytes.Equal(enc, enc2) {
			t.Fatalf("encoding is not stable: %s vs %s (%v)", enc, enc2, err)
		}
	})
}

// commandsEqual compares every field, so that a field added to fsm.Command
// is covered too; empty and nil maps are the same on the wire.
func commandsEqual(a, b fsm.Command) bool {
	a.Spec, b.Spec = normSpec(a.Spec), normSpec(b.Spec)
	return reflect.DeepEqual(a, b)
}

func normSpec(s *fsm.Spec) *fsm.Spec {
	if s == nil {
		return nil
	}
	c := s.Clone()
	if len(c.Env) == 0 {
		c.Env = nil
	}
	if len(c.Labels) == 0 {
		c.Labels = nil
	}
	return &c
}

// normEnvelope makes decoded envelopes comparable with reflect.DeepEqual:
// each decode makes its own time.Location.
func normEnvelope(e events.Envelope) events.Envelope {
	e.Time = e.Time.UTC()
	e.Payload.Spec = normSpec(e.Payload.Spec)
	e.State.Spec = *normSpec(&e.State.Spec)
	return e
}

// A valid envelope to seed from.
func seedEnvelope(tb testing.TB) []byte {
	tb.Helper()
	cmd := fsm.Command{ID: "c1", Type: fsm.Create, Workspace: "ws-1", Actor: "alice",
		Spec: &fsm.Spec{Image: "alpine:3", Env: map[string]string{"A": "<1>"}}}
	d := fsm.Decide(fsm.Workspace{ID: "ws-1"}, cmd)
	if d.Event == nil {
		tb.Fatalf("create not accepted: %+v", d)
	}
	env := events.NewEnvelope("e1", fsm.Workspace{ID: "ws-1"}, *d.Event, cmd, time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC))
	b, err := events.Codec{}.Encode(env)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// FuzzDecodeEnvelope: Decode never panics; what it accepts is a known type
// at the current schema version for a valid workspace, and encodes back to
// an envelope that decodes to the same thing; every refusal is classified.
func FuzzDecodeEnvelope(f *testing.F) {
	valid := seedEnvelope(f)
	f.Add(valid)
	f.Add(valid[:len(valid)/2])
	for _, s := range []string{
		`{}`, `null`, `[]`, ``,
		`{"schema_version":2,"type":"workspace.created"}`,
		`{"schema_version":0,"type":"workspace.created"}`,
		`{"schema_version":-1}`,
		`{"schema_version":1e40}`,
		`{"schema_version":"1"}`,
		`{"schema_version":1,"type":"workspace.exploded","workspace":"ws-1","seq":1,"generation":1}`,
		`{"schema_version":1,"type":"workspace.created","workspace":"ws.1","seq":1,"generation":1}`,
		`{"schema_version":1,"type":"workspace.created","workspace":"ws-1","seq":0,"generation":1}`,
		`{"schema_version":1,"type":"workspace.created","workspace":"ws-1","seq":1,"generation":1}`,
		`{"schema_version":1,"type":"workspace.created","workspace":"ws-1","seq":1,"generation":1,"time":"9999-12-31T23:59:59-23:59"}`,
		`{"schema_version":1,"type":"workspace.created","workspace":"ws-1","seq":1,"generation":1,"bogus":1}`,
		`{"schema_version":1,"SCHEMA_VERSION":2,"type":"workspace.created","workspace":"ws-1","seq":1,"generation":1}`,
		`{"schema_version":1,"type":"workspace.created","workspace":"ws-1","seq":1,"generation":1,"payload":{"spec":null,"exit_code":-1}}`,
		`{"schema_version":1,"type":"workspace.created","workspace":"ws-1","seq":1,"generation":1,"state":{"spec":{"env":{}}}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var codec events.Codec
		e, err := codec.Decode(b)
		if err != nil {
			if !errors.Is(err, events.ErrMalformed) && !errors.Is(err, events.ErrUnknownType) && !errors.Is(err, events.ErrFutureSchema) {
				t.Fatalf("unclassified decode error: %v", err)
			}
			return
		}
		if !e.Type.Known() {
			t.Fatalf("accepted unknown type %q", e.Type)
		}
		if e.SchemaVersion != events.SchemaVersion {
			t.Fatalf("accepted schema version %d", e.SchemaVersion)
		}
		if err := fsm.ValidateID(e.Workspace); err != nil {
			t.Fatalf("accepted workspace id: %v", err)
		}
		if e.Seq == 0 || e.Generation == 0 {
			t.Fatalf("accepted seq %d generation %d", e.Seq, e.Generation)
		}
		enc, err := codec.Encode(e)
		if err != nil {
			// Only the size bound may stop it: escaping can grow a string
			// up to six times.
			if raw, merr := json.Marshal(e); merr != nil || len(raw) <= events.MaxEnvelopeBytes {
				t.Fatalf("decoded envelope does not encode: %v", err)
			}
			return
		}
		e2, err := codec.Decode(enc)
		if err != nil {
			t.Fatalf("re-encoded envelope %s does not decode: %v", enc, err)
		}
		if !reflect.DeepEqual(normEnvelope(e), normEnvelope(e2)) {
			t.Fatalf("round trip changed the envelope:\n%+v\n%+v", e, e2)
		}
		enc2, err := codec.Encode(e2)
		if err != nil || !bytes.Equal(enc, enc2) {
			t.Fatalf("encoding is not stable:\n%s\n%s (%v)", enc, enc2, err)
		}
	})
}

// FuzzDecodeOutcome: DecodeOutcome never panics; what it accepts has a
// known outcome and survives a round trip; refusals are ErrMalformed.
func FuzzDecodeOutcome(f *testing.F) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	for _, o := range []events.OutcomeRecord{
		{CommandID: "c1", Workspace: "ws-1", CommandType: fsm.Create, Outcome: fsm.Accepted, EventSeq: 1, Generation: 1, State: fsm.Provisioning, ReceivedAt: now, DecidedAt: now},
		{CommandID: "c2", Workspace: "ws-1", CommandType: fsm.Start, Outcome: fsm.Noop, Reason: "already running", ReceivedAt: now, DecidedAt: now},
		{CommandID: "c3", Workspace: "ws-1", CommandType: fsm.ProvisionFailed, Outcome: fsm.Stale, CommandGeneration: 1, Generation: 2},
		{CommandID: "invalid-7", Outcome: fsm.Rejected, Rejection: fsm.Invalid("", "command is not valid JSON")},
	} {
		b, err := events.EncodeOutcome(o)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, s := range []string{
		`{}`, `null`, ``, `{"outcome":"maybe"}`, `{"outcome":"accepted"`,
		`{"outcome":"accepted","received_at":"not a time"}`,
		`{"outcome":"rejected","rejection":{"code":"invalid","allowed":null}}`,
		`{"outcome":"accepted","event_seq":-1}`,
		`{"outcome":"accepted","future_field":{"a":[1,2,3]}}`,
		`{"outcome":"accepted","OUTCOME":"stale"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		o, err := events.DecodeOutcome(b)
		if err != nil {
			if !errors.Is(err, events.ErrMalformed) {
				t.Fatalf("unclassified decode error: %v", err)
			}
			return
		}
		switch o.Outcome {
		case fsm.Accepted, fsm.Noop, fsm.Rejected, fsm.Stale:
		default:
			t.Fatalf("accepted outcome %q", o.Outcome)
		}
		enc, err := events.EncodeOutcome(o)
		if err != nil {
			t.Fatalf("decoded outcome does not encode: %v", err)
		}
		// What the engine stores, a reader can read: never past the bound.
		o2, err := events.DecodeOutcome(enc)
		if err != nil {
			t.Fatalf("re-encoded outcome (%d bytes) does not decode: %v", len(enc), err)
		}
		if raw, err := json.Marshal(o); err != nil || len(raw) > events.MaxEnvelopeBytes {
			return // escaping grew it past the bound: its texts were shortened to fit
		}
		if !reflect.DeepEqual(normOutcome(o), normOutcome(o2)) {
			t.Fatalf("round trip changed the outcome:\n%+v\n%+v", o, o2)
		}
		enc2, err := events.EncodeOutcome(o2)
		if err != nil || !bytes.Equal(enc, enc2) {
			t.Fatalf("encoding is not stable:\n%s\n%s (%v)", enc, enc2, err)
		}
	})
}

func normOutcome(o events.OutcomeRecord) events.OutcomeRecord {
	o.ReceivedAt, o.DecidedAt = o.ReceivedAt.UTC(), o.DecidedAt.UTC()
	return o
}
