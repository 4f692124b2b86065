package worker

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/turnstile-dev/turnstile/fsm"
)

// TestTruncateSurvivesJSON: a reason cut at fsm.MaxReasonLen stays within
// it after the JSON round trip a report makes, whether the cut falls in a
// character or the text holds bytes that are not UTF-8 (a container's
// output may); a cut through "é" used to arrive as 2050 bytes and the
// report was refused.
func TestTruncateSurvivesJSON(t *testing.T) {
	n := fsm.MaxReasonLen
	for name, s := range map[string]string{
		"cut in a character": strings.Repeat("a", n-1) + "é and more",
		"stray bytes":        strings.Repeat("\xff", n),
		"short":              "exited: é",
	} {
		got := truncate(s, n)
		b, err := json.Marshal(got)
		if err != nil {
			t.Fatal(err)
		}
		var back string
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatal(err)
		}
		if len(got) > n || len(back) > n || !utf8.ValidString(got) {
			t.Errorf("%s: truncated to %d bytes (valid %v), %d after JSON: want at most %d", name, len(got), utf8.ValidString(got), len(back), n)
		}
	}
	if got := truncate("exited: é", n); got != "exited: é" {
		t.Errorf("a short reason changed: %q", got)
	}
}
