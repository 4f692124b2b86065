package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"sigs.k8s.io/yaml"

	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/internal/termsafe"
)

// structured reports whether -o asks for a document (json or yaml)
// rather than a table.
func (a *app) structured() bool { return a.output == "json" || a.output == "yaml" }

// print writes v as -o asks: indented JSON, or YAML with the JSON
// field names (through sigs.k8s.io/yaml, so both formats say the same).
// The JSON goes to YAML with C1 controls and DEL as \u escapes
// (termsafe.JSON): go-yaml refuses them raw in its input ("control
// characters are not allowed"), and a container's text in a reason made
// -o yaml fail; escaped, it reads them and writes them escaped ("\x9B").
// go-yaml writes what YAML calls printable raw, bidi controls and other
// format characters too, so strings holding those are written by
// yamlEscaped instead.
func (a *app) print(v any) error {
	if a.output != "yaml" {
		return printJSON(a.out, v)
	}
	j, err := json.Marshal(v)
	if err != nil {
		return err
	}
	j, quoted, err := yamlEscaped(j)
	if err != nil {
		return err
	}
	b, err := yaml.JSONToYAML(termsafe.JSON(j))
	if err != nil {
		return err
	}
	for _, q := range quoted {
		b = bytes.ReplaceAll(b, []byte(q.placeholder), []byte(q.scalar))
	}
	_, err = a.out.Write(b)
	return err
}

// yamlQuoted is a string of a -o yaml document, as a double-quoted
// scalar, and the plain token that stands for it in go-yaml's output.
type yamlQuoted struct{ placeholder, scalar string }

// yamlEscaped returns j, a JSON document as encoding/json writes it,
// with each string (value or key) that holds a terminal-unsafe character
// go-yaml would write raw (termsafe.Unsafe from DEL up: bidi controls,
// zero-width and other format characters, line separators) replaced by a
// plain token, and each token with the string as a double-quoted YAML
// scalar that escapes those characters (yamlQuote). The tokens are
// letters, digits and '-', which go-yaml writes as they are, unquoted and
// unwrapped, and none occurs in j, so each found in the YAML is one of
// them. j is returned itself when no string needs it.
func yamlEscaped(j []byte) ([]byte, []yamlQuoted, error) {
	unsafe := func(r rune) bool { return r >= 0x7f && termsafe.Unsafe(r) }
	// encoding/json writes U+2028 and U+2029 as \u2028, \u2029.
	if !bytes.ContainsFunc(j, unsafe) && !bytes.Contains(j, []byte(`\u202`)) {
		return j, nil, nil
	}
	dec := json.NewDecoder(bytes.NewReader(j))
	dec.UseNumber() // a uint64 stays exact
	var doc any
	if err := dec.Decode(&doc); err != nil {
		return nil, nil, fmt.Errorf("yaml: %w", err)
	}
	base := "turnstile-yaml-"
	for bytes.Contains(j, []byte(base)) {
		base += "x"
	}
	var quoted []yamlQuoted
	token := map[string]string{}
	str := func(s string) string {
		if !strings.ContainsFunc(s, unsafe) {
			return s
		}
		t, ok := token[s]
		if !ok {
			// Ended by 'z': no token is a part of another ("…-1z", "…-11z").
			t = base + strconv.Itoa(len(quoted)) + "z"
			token[s] = t
			quoted = append(quoted, yamlQuoted{placeholder: t, scalar: yamlQuote(s)})
		}
		return t
	}
	var walk func(v any) any
	walk = func(v any) any {
		switch v := v.(type) {
		case string:
			return str(v)
		case []any:
			for i := range v {
				v[i] = walk(v[i])
			}
		case map[string]any:
			out := make(map[string]any, len(v))
			for k, e := range v {
				out[str(k)] = walk(e)
			}
			return out
		}
		return v
	}
	doc = walk(doc)
	if len(quoted) == 0 {
		return j, nil, nil
	}
	out, err := json.Marshal(doc)
	if err != nil {
		return nil, nil, fmt.Errorf("yaml: %w", err)
	}
	return out, quoted, nil
}

// yamlQuote is s as a YAML double-quoted scalar on one line: '"' and '\\'
// escaped, and every character that is unsafe on a terminal
// (termsafe.Unsafe) or not printable in YAML as \xXX, \uXXXX or
// \UXXXXXXXX, which a YAML reader takes back as the character.
func yamlQuote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case termsafe.Unsafe(r) || r == 0xfffe || r == 0xffff:
			switch {
			case r <= 0xff:
				fmt.Fprintf(&b, `\x%02X`, r)
			case r <= 0xffff:
				fmt.Fprintf(&b, `\u%04X`, r)
			default:
				fmt.Fprintf(&b, `\U%08X`, r)
			}
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// printNext writes v as one more document of a stream (--watch,
// --follow): JSON on one line each, YAML after a "---" separator.
func (a *app) printNext(v any) error {
	if a.output != "yaml" {
		return json.NewEncoder(termsafe.Writer(a.out)).Encode(v)
	}
	fmt.Fprintln(a.out, "---")
	return a.print(v)
}

// printJSON writes v as indented JSON, with the characters that act on a
// terminal (C1, DEL, bidi controls) as \u escapes (termsafe.Writer):
// encoding/json escapes C0 only, and -o json is read on terminals too.
// YAML's encoder escapes C0 and C1 itself.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(termsafe.Writer(w))
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// table writes aligned columns.
type table struct{ tw *tabwriter.Writer }

func newTable(w io.Writer, header ...string) *table {
	t := &table{tw: tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)}
	if len(header) > 0 {
		t.row(header...)
	}
	return t
}

func (t *table) row(cols ...string) {
	clean := make([]string, len(cols))
	for i, c := range cols {
		clean[i] = printable(c)
	}
	fmt.Fprintln(t.tw, strings.Join(clean, "\t"))
}

// printable is s for a terminal (termsafe.Text): each control character
// (C0 with ESC, \n, \t and \r, DEL, C1), bidi control, zero-width or
// other format character and line separator is written as Go would quote
// it (\x1b, \n, \u009b, \u202e) and an invalid byte as U+FFFD. Cells and
// messages carry free text (an actor, a container's health-check output
// in last_error) that could otherwise rewrite the operator's terminal (ESC
// and OSC sequences), fake rows, or reorder a line (bidi overrides). For
// human output only: -o json carries the values as they are, escaped
// (termsafe.Writer).
func printable(s string) string { return termsafe.Text(s) }

func (t *table) flush() error { return t.tw.Flush() }

// liveTable writes rows as they come, each at once, padded to the widest
// cell seen so far in its column: a follow's rows line up with the
// block before them without waiting for the rows after.
type liveTable struct {
	w      io.Writer
	widths []int
}

// add widens the columns to fit rows without writing them.
func (t *liveTable) add(rows ...[]string) {
	for _, r := range rows {
		for i, c := range r {
			if i >= len(t.widths) {
				t.widths = append(t.widths, 0)
			}
			t.widths[i] = max(t.widths[i], utf8.RuneCountInString(printable(c)))
		}
	}
}

// row writes one row.
func (t *liveTable) row(cols ...string) error {
	t.add(cols)
	var b strings.Builder
	for i, c := range cols {
		c = printable(c)
		b.WriteString(c)
		if i < len(cols)-1 {
			b.WriteString(strings.Repeat(" ", t.widths[i]-utf8.RuneCountInString(c)+2))
		}
	}
	b.WriteByte('\n')
	_, err := io.WriteString(t.w, b.String())
	return err
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// formatTime is a time in the local zone, with the zone's offset so that
// it reads the same anywhere.
func formatTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format("2006-01-02 15:04:05.000 -07:00")
}

// formatAge is how long ago t was, as kubectl's AGE column says it: 45s,
// 12m, 3h5m, 4d.
func formatAge(t *time.Time, now time.Time) string {
	if t == nil || t.IsZero() {
		return "-"
	}
	d := max(now.Sub(*t), 0)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 24*time.Hour:
		h := int(d.Hours())
		if m := int(d.Minutes()) - 60*h; m > 0 && h < 10 {
			return fmt.Sprintf("%dh%dm", h, m)
		}
		return fmt.Sprintf("%dh", h)
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func commandList(cs []fsm.CommandType) string {
	if len(cs) == 0 {
		return "nothing"
	}
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = string(c)
	}
	return strings.Join(out, ", ")
}
