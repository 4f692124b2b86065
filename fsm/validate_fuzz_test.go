package fsm_test

import (
	"regexp"
	"strings"
	"testing"
	"unicode"

	"github.com/turnstile-dev/turnstile/fsm"
)

// The DESIGN.md pattern, restated here so that a change to the one in
// validate.go cannot pass unnoticed.
var dnsLabel = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// isDNSLabel is an independent, regexp-free statement of the same rule.
func isDNSLabel(s string) bool {
	if len(s) < 1 || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// FuzzValidateID: ValidateID accepts exactly the DNS labels, and nothing it
// accepts can break a NATS subject, a Docker name or a URL segment.
func FuzzValidateID(f *testing.F) {
	for _, s := range []string{
		"a", "0", "ws-1", "a-b-c", strings.Repeat("a", 63), strings.Repeat("a", 64),
		"", "-a", "a-", "A", "a.b", "a*", ">", "a b", "a\tb", "a\n", "\na", "wš", "ａ",
		"a\x00", "a/b", "a_b", "%2e", "ws-1\u200b", strings.Repeat("9", 62) + "-",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) {
		err := fsm.ValidateID(id)
		want := dnsLabel.MatchString(id)
		if want != isDNSLabel(id) {
			t.Fatalf("the test's two statements of the rule disagree on %q", id)
		}
		if (err == nil) != want {
			t.Fatalf("ValidateID(%q) = %v, want accepted=%v", id, err, want)
		}
		if err != nil {
			if err.Error() == "" {
				t.Fatalf("ValidateID(%q): empty message", id)
			}
			return
		}
		if len(id) > fsm.MaxIDLen {
			t.Fatalf("accepted %d bytes", len(id))
		}
		if strings.ContainsAny(id, ".*>/") || strings.IndexFunc(id, unicode.IsSpace) >= 0 {
			t.Fatalf("accepted %q, which is unsafe as a subject token", id)
		}
		for _, r := range id {
			if r >= unicode.MaxASCII || unicode.IsUpper(r) {
				t.Fatalf("accepted %q with rune %q", id, r)
			}
		}
	})
}

// The command id pattern, restated: ValidateCommandID spells it out by hand.
var commandIDPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,128}$`)

// FuzzValidateCommandID: ValidateCommandID accepts exactly the pattern.
func FuzzValidateCommandID(f *testing.F) {
	for _, s := range []string{
		"a", "A-b_9", "sys-provision-ws-g1", strings.Repeat("x", 128), strings.Repeat("x", 129),
		"", "a b", "a.b", "a*", ">", "ä", "a\n", "\x00", "a/b", "ｘ",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) {
		got, want := fsm.ValidateCommandID(id) == nil, commandIDPattern.MatchString(id)
		if got != want {
			t.Fatalf("ValidateCommandID(%q) accepts: %v, the pattern: %v", id, got, want)
		}
	})
}
