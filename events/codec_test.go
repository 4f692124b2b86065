package events

// An internal test: the upcast path cannot be reached through Decode while
// SchemaVersion is 1 (versions below 1 are refused as malformed), so it is
// exercised directly here.

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/turnstile-dev/turnstile/fsm"
)

func validEnvelope(t *testing.T) Envelope {
	t.Helper()
	cmd := fsm.Command{ID: "cmd-1", Type: fsm.Create, Workspace: "ws-1", Actor: "alice",
		Spec: &fsm.Spec{Image: "alpine:3", Env: map[string]string{"A": "1"}, MemoryBytes: 64 << 20}}
	d := fsm.Decide(fsm.Workspace{ID: "ws-1"}, cmd)
	if d.Event == nil {
		t.Fatalf("create not accepted: %+v", d)
	}
	return NewEnvelope("evt-1", fsm.Workspace{ID: "ws-1"}, *d.Event, cmd, time.Date(2026, 3, 4, 5, 6, 7, 8, time.UTC))
}

// rawEnvelope returns a valid encoded envelope with some top-level fields
// replaced (a nil value deletes the field).
func rawEnvelope(t *testing.T, set map[string]any) []byte {
	t.Helper()
	b, err := Codec{}.Encode(validEnvelope(t))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	for k, v := range set {
		if v == nil {
			delete(m, k)
		} else {
			m[k] = v
		}
	}
	out, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestCodecRoundTrip(t *testing.T) {
	env := validEnvelope(t)
	b, err := Codec{}.Encode(env)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Codec{}.Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != env.ID || got.Type != fsm.Created || got.SchemaVersion != SchemaVersion || got.Seq != 1 ||
		got.Generation != 1 || !got.Time.Equal(env.Time) || got.CommandID != "cmd-1" || got.Actor != "alice" ||
		got.Payload.Spec == nil || !got.Payload.Spec.Equal(*env.Payload.Spec) ||
		got.State.Status != fsm.Provisioning || !got.State.Spec.Equal(env.State.Spec) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, env)
	}
}

func TestCodecDecodeRefuses(t *testing.T) {
	for _, tc := range []struct {
		name    string
		input   []byte
		want    error
		message string // a fragment the error must contain
	}{
		{"UnknownType", rawEnvelope(t, map[string]any{"type": "workspace.exploded"}), ErrUnknownType, `"workspace.exploded"`},
		{"EmptyType", rawEnvelope(t, map[string]any{"type": nil}), ErrUnknownType, `type ""`},
		{"FutureSchema", rawEnvelope(t, map[string]any{"schema_version": SchemaVersion + 1}), ErrFutureSchema,
			fmt.Sprintf("schema version %d, this build reads up to %d", SchemaVersion+1, SchemaVersion)},
		{"FarFutureSchema", rawEnvelope(t, map[string]any{"schema_version": 1 << 40}), ErrFutureSchema, "this build reads up to"},
		{"SchemaZero", rawEnvelope(t, map[string]any{"schema_version": 0}), ErrMalformed, "schema version 0"},
		{"SchemaMissing", rawEnvelope(t, map[string]any{"schema_version": nil}), ErrMalformed, "schema version 0"},
		{"SchemaNegative", rawEnvelope(t, map[string]any{"schema_version": -3}), ErrMalformed, "schema version -3"},
		{"SchemaString", rawEnvelope(t, map[string]any{"schema_version": "1"}), ErrMalformed, "schema_version"},
		{"SchemaFloat", rawEnvelope(t, map[string]any{"schema_version": 1.5}), ErrMalformed, "schema_version"},
		{"Empty", []byte(``), ErrMalformed, "malformed"},
		{"NotJSON", []byte(`workspace.created`), ErrMalformed, "invalid character"},
		{"Truncated", func() []byte { b := rawEnvelope(t, nil); return b[:len(b)-7] }(), ErrMalformed, "unexpected end"},
		{"TrailingData", append(rawEnvelope(t, nil), []byte(` {}`)...), ErrMalformed, "after top-level value"},
		{"Array", []byte(`[1,2]`), ErrMalformed, "cannot unmarshal array"},
		{"WrongFieldType", rawEnvelope(t, map[string]any{"seq": "one"}), ErrMalformed, "seq"},
		{"UnknownField", rawEnvelope(t, map[string]any{"colour": "blue"}), ErrMalformed, `unknown field "colour"`},
		{"UnknownPayloadField", rawEnvelope(t, map[string]any{"payload": map[string]any{"extra": 1}}), ErrMalformed, `unknown field "extra"`},
		{"UnknownStateField", rawEnvelope(t, map[string]any{"state": map[string]any{"colour": 1}}), ErrMalformed, `unknown field "colour"`},
		{"BadWorkspace", rawEnvelope(t, map[string]any{"workspace": "ws.1"}), ErrMalformed, "not a DNS label"},
		{"NoWorkspace", rawEnvelope(t, map[string]any{"workspace": nil}), ErrMalformed, "workspace id is empty"},
		{"SeqZero", rawEnvelope(t, map[string]any{"seq": 0}), ErrMalformed, "seq and generation start at 1"},
		{"GenerationZero", rawEnvelope(t, map[string]any{"generation": 0}), ErrMalformed, "seq and generation start at 1"},
		{"TooLarge", []byte(`{"pad":"` + strings.Repeat("x", MaxEnvelopeBytes) + `"}`), ErrMalformed, "exceeds"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Codec{}.Decode(tc.input)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Decode: %v, want %v", err, tc.want)
			}
			for _, other := range []error{ErrUnknownType, ErrFutureSchema, ErrMalformed} {
				if !errors.Is(tc.want, other) && errors.Is(err, other) {
					t.Fatalf("Decode: %v is also %v", err, other)
				}
			}
			if !strings.Contains(err.Error(), tc.message) {
				t.Fatalf("Decode: %q does not say %q", err, tc.message)
			}
		})
	}
}

func TestCodecEncodeRefuses(t *testing.T) {
	t.Run("ErrUnknownType", func(t *testing.T) {
		env := validEnvelope(t)
		env.Type = "workspace.exploded"
		if _, err := (Codec{}).Encode(env); !errors.Is(err, ErrUnknownType) {
			t.Fatalf("Encode: %v, want ErrUnknownType", err)
		}
	})
	t.Run("ErrMalformedTooLarge", func(t *testing.T) {
		env := validEnvelope(t)
		env.Payload.Reason = strings.Repeat("x", MaxEnvelopeBytes)
		if _, err := (Codec{}).Encode(env); !errors.Is(err, ErrMalformed) {
			t.Fatalf("Encode: %v, want ErrMalformed", err)
		}
	})
}

// v0 is a made-up schema version 0 of the envelope: the workspace was
// called "ws".
func v0Envelope(t *testing.T) []byte {
	t.Helper()
	b := rawEnvelope(t, map[string]any{"schema_version": 0, "workspace": nil, "ws": "ws-1"})
	if !strings.Contains(string(b), `"ws":"ws-1"`) {
		t.Fatalf("v0 envelope: %s", b)
	}
	return b
}

func renameWS(raw map[string]json.RawMessage) error {
	raw["workspace"] = raw["ws"]
	delete(raw, "ws")
	return nil
}

// At SchemaVersion 1 no stored envelope can be older than the build, so the
// Decode path never upcasts: version 0 is malformed, upcaster or not.
func TestCodecVersionZeroIsMalformed(t *testing.T) {
	called := false
	c := Codec{Upcasters: map[int]Upcaster{0: func(raw map[string]json.RawMessage) error {
		called = true
		return renameWS(raw)
	}}}
	if _, err := c.Decode(v0Envelope(t)); !errors.Is(err, ErrMalformed) {
		t.Fatalf("Decode of v0: %v, want ErrMalformed", err)
	}
	if called && SchemaVersion == 1 {
		t.Fatal("upcaster ran for a version Decode refuses")
	}
}

func TestCodecUpcast(t *testing.T) {
	t.Run("OK", func(t *testing.T) {
		c := Codec{Upcasters: map[int]Upcaster{0: renameWS}}
		for v := 1; v < SchemaVersion; v++ {
			c.Upcasters[v] = func(map[string]json.RawMessage) error { return nil }
		}
		up, err := c.upcast(v0Envelope(t), 0)
		if err != nil {
			t.Fatal(err)
		}
		var head struct {
			SchemaVersion int    `json:"schema_version"`
			Workspace     string `json:"workspace"`
		}
		if err := json.Unmarshal(up, &head); err != nil {
			t.Fatal(err)
		}
		if head.SchemaVersion != SchemaVersion || head.Workspace != "ws-1" {
			t.Fatalf("upcast to %+v from %s", head, up)
		}
		// The upcast envelope is a current one.
		env, err := c.Decode(up)
		if err != nil || env.Workspace != "ws-1" || env.SchemaVersion != SchemaVersion {
			t.Fatalf("Decode of the upcast envelope: %+v, %v", env, err)
		}
	})
	t.Run("ErrMalformedNoUpcaster", func(t *testing.T) {
		_, err := Codec{}.upcast(v0Envelope(t), 0)
		if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "no upcaster from schema version 0") {
			t.Fatalf("upcast without an upcaster: %v", err)
		}
	})
	t.Run("UpcasterError", func(t *testing.T) {
		boom := errors.New("boom")
		c := Codec{Upcasters: map[int]Upcaster{0: func(map[string]json.RawMessage) error { return boom }}}
		_, err := c.upcast(v0Envelope(t), 0)
		if !errors.Is(err, boom) || !strings.Contains(err.Error(), "upcast from version 0") {
			t.Fatalf("upcast with a failing upcaster: %v", err)
		}
	})
	t.Run("ErrMalformedNotAnObject", func(t *testing.T) {
		c := Codec{Upcasters: map[int]Upcaster{0: renameWS}}
		if _, err := c.upcast([]byte(`[0]`), 0); !errors.Is(err, ErrMalformed) {
			t.Fatalf("upcast of an array: %v", err)
		}
	})
}

func TestDecodeCommandRefuses(t *testing.T) {
	valid := `{"id":"c1","type":"create","workspace":"ws-1"}`
	// A spec whose canonical encoding is six times its size on the wire:
	// json.Marshal writes '<' as \u003c.
	var env strings.Builder
	env.WriteString(`{"id":"c1","type":"create","workspace":"ws-1","spec":{"env":{`)
	for i := range 15 {
		if i > 0 {
			env.WriteByte(',')
		}
		fmt.Fprintf(&env, `"V%d":"%s"`, i, strings.Repeat("<", 4000))
	}
	env.WriteString(`}}}`)
	for _, tc := range []struct {
		name, input, subject, message string
	}{
		{"TrailingValue", valid + ` {}`, "", "trailing data"},
		{"TrailingBracket", valid + `]`, "", "trailing data"},
		{"TrailingBrace", valid + ` }`, "", "trailing data"},
		{"OtherWorkspace", valid, "ws-2", `names workspace "ws-1" but was published for "ws-2"`},
		{"TooLarge", `{"id":"c1","pad":"` + strings.Repeat("x", MaxCommandBytes) + `"}`, "", "at most"},
		{"GrowsPastLimit", env.String(), "", "at most"},
		// issue 12 item 11: encoding/json keeps the last of two keys and
		// folds field names' case; both are refused.
		{"DuplicateType", `{"id":"c1","type":"create","workspace":"ws-1","type":"delete"}`, "", `duplicate key "type"`},
		{"DuplicateEscaped", `{"id":"c1","type":"create","workspace":"ws-1","typ\u0065":"delete"}`, "", `duplicate key "type"`},
		{"DuplicateEnv", `{"id":"c1","type":"create","workspace":"ws-1","spec":{"env":{"A":"1","A":"2"}}}`, "", `duplicate key "A" in $.spec.env`},
		{"CaseFoldedType", `{"id":"c1","Type":"create","workspace":"ws-1"}`, "", `field "Type" is not known; did you mean "type"?`},
		{"CaseFoldedSpec", `{"id":"c1","type":"create","workspace":"ws-1","spec":{"Image":"x"}}`, "", `did you mean "image"?`},
		{"UnicodeFoldedSpec", `{"id":"c1","type":"create","workspace":"ws-1","ſpec":{}}`, "", `did you mean "spec"?`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecodeCommand([]byte(tc.input), tc.subject)
			var rej *fsm.Rejection
			if !errors.As(err, &rej) || rej.Code != fsm.CodeInvalid {
				t.Fatalf("DecodeCommand: %v, want an invalid rejection", err)
			}
			if !strings.Contains(rej.Message, tc.message) {
				t.Fatalf("DecodeCommand: %q does not say %q", rej.Message, tc.message)
			}
		})
	}
	t.Run("OK", func(t *testing.T) {
		for _, s := range []string{valid, valid + "\n", " \t" + valid + " \r\n"} {
			if _, err := DecodeCommand([]byte(s), "ws-1"); err != nil {
				t.Fatalf("DecodeCommand(%q): %v", s, err)
			}
		}
	})
}

// Whatever DecodeCommand accepts, the engine must be able to store: an
// envelope holds the spec twice (payload and state), re-encoded, and
// re-encoding escapes '<' as \u003c, U+2028 as \u2028 and invalid UTF-8 as
// U+FFFD.
func TestDecodedCommandFitsAnEnvelope(t *testing.T) {
	for _, filler := range []string{"x", "<", "\u2028", "\xff"} {
		t.Run(fmt.Sprintf("%q", filler), func(t *testing.T) {
			var b strings.Builder
			b.WriteString(`{"id":"c1","type":"create","workspace":"ws-1","spec":{"env":{`)
			value := strings.Repeat(filler, 3900/len(filler))
			for i := 0; b.Len() < MaxCommandBytes-4000; i++ {
				if i > 0 {
					b.WriteByte(',')
				}
				fmt.Fprintf(&b, `"V%d":"%s"`, i, value)
			}
			b.WriteString(`}}}`)
			if b.Len() > MaxCommandBytes {
				t.Fatalf("test command is %d bytes", b.Len())
			}
			cmd, err := DecodeCommand([]byte(b.String()), "ws-1")
			if err != nil {
				if fsm.RejectionCode(err) != fsm.CodeInvalid {
					t.Fatalf("DecodeCommand: %v", err)
				}
				return // refused at the edge: fine
			}
			d := fsm.Decide(fsm.Workspace{ID: "ws-1"}, cmd)
			if d.Event == nil {
				t.Fatalf("create not accepted: %+v", d)
			}
			e := NewEnvelope("evt-1", fsm.Workspace{ID: "ws-1"}, *d.Event, cmd, time.Now())
			if _, err := (Codec{}).Encode(e); err != nil {
				t.Fatalf("accepted command cannot be stored: %v", err)
			}
		})
	}
}

// An outcome found under a report's id is the report's own only for the
// same workspace, generation and kind of observation (issue 12 item 3).
func TestOutcomeAnswers(t *testing.T) {
	report := fsm.Command{ID: "sys-provision-w-g2", Type: fsm.ProvisionSucceeded, Workspace: "w", Generation: 2}
	for _, tc := range []struct {
		name string
		o    OutcomeRecord
		want bool
	}{
		{"Own", OutcomeRecord{Workspace: "w", CommandType: fsm.ProvisionSucceeded, CommandGeneration: 2}, true},
		{"RedoneWithTheOtherResult", OutcomeRecord{Workspace: "w", CommandType: fsm.ProvisionFailed, CommandGeneration: 2}, true},
		{"OtherWorkspace", OutcomeRecord{Workspace: "v", CommandType: fsm.ProvisionSucceeded, CommandGeneration: 2}, false},
		{"OtherGeneration", OutcomeRecord{Workspace: "w", CommandType: fsm.ProvisionSucceeded, CommandGeneration: 1}, false},
		{"OtherKind", OutcomeRecord{Workspace: "w", CommandType: fsm.StopSucceeded, CommandGeneration: 2}, false},
		{"AUserCommand", OutcomeRecord{Workspace: "w", CommandType: fsm.Start}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.o.Answers(report); got != tc.want {
				t.Fatalf("Answers = %v, want %v", got, tc.want)
			}
		})
	}
	user := fsm.Command{ID: "u", Type: fsm.Start, Workspace: "w"}
	if !(OutcomeRecord{Workspace: "w", CommandType: fsm.Start}).Answers(user) ||
		(OutcomeRecord{Workspace: "w", CommandType: fsm.Stop}).Answers(user) {
		t.Fatal("user command: same workspace and type only")
	}
}
