package events_test

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/fsm"
)

// A record whose text would take it past MaxEnvelopeBytes once escaped
// ('<' is written \u003c) is shortened, not stored unreadable: whatever
// EncodeOutcome returns, DecodeOutcome reads.
func TestEncodeOutcomeAlwaysDecodes(t *testing.T) {
	long := strings.Repeat("<", 65000) + "é"
	rej := fsm.Invalid(fsm.Stop, "%s", long)
	o := events.OutcomeRecord{CommandID: "c1", Workspace: "w1", CommandType: fsm.Stop, Outcome: fsm.Rejected,
		Rejection: rej, Reason: long}
	b, err := events.EncodeOutcome(o)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > events.MaxEnvelopeBytes {
		t.Fatalf("encoded outcome is %d bytes, past %d", len(b), events.MaxEnvelopeBytes)
	}
	got, err := events.DecodeOutcome(b)
	if err != nil {
		t.Fatalf("the encoded outcome does not decode: %v", err)
	}
	if got.Outcome != fsm.Rejected || got.Rejection == nil || got.Rejection.Code != fsm.CodeInvalid || got.CommandID != "c1" {
		t.Fatalf("decoded %+v", got)
	}
	for _, s := range []string{got.Rejection.Message, got.Reason} {
		if !strings.HasPrefix(s, "<<<") || !strings.HasSuffix(s, "(65002 bytes in all)") || !utf8.ValidString(s) {
			t.Errorf("shortened text %.40q…%q", s, s[max(0, len(s)-40):])
		}
	}
	if rej.Message != long {
		t.Error("EncodeOutcome changed the caller's rejection")
	}
	// A record that fits is written whole.
	o.Rejection, o.Reason = fsm.Invalid(fsm.Stop, "%s", strings.Repeat("<", 1000)), ""
	if b, err := events.EncodeOutcome(o); err != nil {
		t.Fatal(err)
	} else if got, err := events.DecodeOutcome(b); err != nil || got.Rejection.Message != o.Rejection.Message {
		t.Fatalf("a record that fits was changed: %v", err)
	}
}

// A refusal quotes the sender's input (a key, a workspace) only in part,
// so that it stays small whatever the command holds.
func TestRefusalQuotesLittleOfTheInput(t *testing.T) {
	huge := strings.Repeat("<", 60000)
	half := huge[:30000] // twice in one command
	for _, tc := range []struct {
		name, body, subject, says string
	}{
		{"UnknownKey", `{"id":"c1","type":"stop","workspace":"w1","` + huge + `":1}`, "w1", `unknown field "<<<`},
		{"DuplicateKey", `{"id":"c1","type":"stop","workspace":"w1","spec":{"env":{"` + half + `":"a","` + half + `":"b"}}}`, "w1", `duplicate key "<<<`},
		{"OtherWorkspace", `{"id":"c1","type":"stop","workspace":"` + huge + `"}`, "w1", `names workspace "<<<`},
		{"WrongType", `{"id":"c1","type":"stop","workspace":"w1","spec":{"env":{"` + huge + `":1}}}`, "w1", "wrong type"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := events.DecodeCommand([]byte(tc.body), tc.subject)
			var rej *fsm.Rejection
			if !errors.As(err, &rej) || rej.Code != fsm.CodeInvalid {
				t.Fatalf("%v, want a rejection with code invalid", err)
			}
			if !strings.Contains(rej.Message, tc.says) {
				t.Errorf("message %.200q does not say %q", rej.Message, tc.says)
			}
			if len(rej.Message) > 2*events.MaxQuotedBytes+1100 || !utf8.ValidString(rej.Message) {
				t.Errorf("message is %d bytes: %.300q", len(rej.Message), rej.Message)
			}
		})
	}
	if q := events.QuoteInput("é" + strings.Repeat("é", events.MaxQuotedBytes)); !utf8.ValidString(q) || !strings.HasSuffix(q, "bytes in all)") {
		t.Errorf("QuoteInput cut a rune or left no mark: %q", q)
	}
}
