package termsafe_test

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/turnstile-dev/turnstile/internal/termsafe"
)

// hostile holds what a container or a user can put in free text: ESC and
// OSC, C1 CSI, DEL, bidi overrides and isolates, a zero-width space, the
// BOM, line and paragraph separators, a tag character (outside the BMP),
// and text that must pass as it is (accents, CJK, an emoji).
const hostile = "ok \x1b]52;c;cm0gLXJmIH4=\x07 \u009b2J \x7f \u202erunning\u202c \u2066x\u2069 \u200b\ufeff \u2028\u2029 \U000e0041 é 日本 🙂"

func TestText(t *testing.T) {
	got := termsafe.Text(hostile + "\xff")
	if strings.ContainsFunc(got, termsafe.Unsafe) {
		t.Errorf("Text left an unsafe character: %q", got)
	}
	for _, want := range []string{`\x1b]52;c;`, `\a`, `\u009b2J`, `\x7f`, `\u202erunning\u202c`, `\u2066x\u2069`,
		`\u200b\ufeff`, `\u2028\u2029`, `\U000e0041`, "é 日本 🙂", "\uFFFD"} {
		if !strings.Contains(got, want) {
			t.Errorf("Text(...) = %q: no %q", got, want)
		}
	}
	if s := "plain text, é 日本 🙂 and spaces"; termsafe.Text(s) != s {
		t.Errorf("Text changed %q to %q", s, termsafe.Text(s))
	}
}

func TestJSON(t *testing.T) {
	v := map[string]string{"reason": hostile, hostile: "key"}
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	got := termsafe.JSON(b)
	if !utf8.Valid(got) || bytes.ContainsFunc(got, termsafe.Unsafe) {
		t.Errorf("JSON left an unsafe character: %q", got)
	}
	var back map[string]string
	if err := json.Unmarshal(got, &back); err != nil {
		t.Fatalf("JSON made %q, which does not decode: %v", got, err)
	}
	if back["reason"] != hostile || back[hostile] != "key" {
		t.Errorf("JSON changed the value: %q", back)
	}
	for _, want := range []string{`\u009b2J`, `\u007f`, `\u202erunning\u202c`, `\udb40\udc41`, "é 日本 🙂"} {
		if !bytes.Contains(got, []byte(want)) {
			t.Errorf("JSON(...) = %s: no %s", got, want)
		}
	}

	safe := []byte(`{"a":"é 日本 🙂 \u001b"}`)
	if got := termsafe.JSON(safe); &got[0] != &safe[0] {
		t.Errorf("JSON copied a document that needed no escape")
	}
}

func TestWriter(t *testing.T) {
	var b bytes.Buffer
	w := termsafe.Writer(&b)
	p := []byte(`{"m":"` + "\u009b" + `"}` + "\n")
	n, err := w.Write(p)
	if err != nil || n != len(p) {
		t.Fatalf("Write = %d, %v; want %d, nil", n, err, len(p))
	}
	if want := `{"m":"\u009b"}` + "\n"; b.String() != want {
		t.Errorf("wrote %q, want %q", b.String(), want)
	}
}
