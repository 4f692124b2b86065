package provisioner

import (
	"cmp"
	"slices"
	"strings"

	"github.com/turnstile-dev/turnstile/fsm"
)

// minSecretLine is the shortest line of a multi-line secret that Redact
// replaces on its own: shorter ones (a blank line, "}") would blot out
// ordinary text and give little away.
const minSecretLine = 8

// Redactor replaces secret values in a text with their references
// (secret://NAME). The zero Redactor changes nothing.
type Redactor struct {
	r *strings.Replacer
	// newlines is the most newlines in one secret value.
	newlines int
}

// NewRedactor returns the Redactor of the secret references refs (env key
// to secret name, fsm.Spec.SecretRefs) as resolved into resolved.
func NewRedactor(refs map[string]string, resolved fsm.Spec) Redactor {
	type pair struct{ value, ref string }
	var ps []pair
	newlines := 0
	for key, name := range refs {
		v := resolved.Env[key]
		if v == "" {
			continue
		}
		ref := fsm.SecretScheme + name
		v = strings.ReplaceAll(v, "\r\n", "\n") // as Redact makes the text
		ps = append(ps, pair{v, ref})
		// A value read from a file often ends in a newline the program
		// prints without, or the text loses (a trimmed health check
		// output): the value within its surrounding space goes too,
		// however short, as the whole value would.
		if t := strings.TrimSpace(v); t != "" && t != v {
			ps = append(ps, pair{t, ref})
		}
		// Each line of a multi-line value (a PEM key) goes too: a text cut
		// to its last lines may hold only the end of the value, which the
		// whole value no longer matches.
		if n := strings.Count(v, "\n"); n > 0 {
			newlines = max(newlines, n)
			for line := range strings.SplitSeq(v, "\n") {
				if line = strings.TrimSpace(line); len(line) >= minSecretLine {
					ps = append(ps, pair{line, ref})
				}
			}
		}
	}
	if len(ps) == 0 {
		return Redactor{}
	}
	// Longest first: the replacer tries its pairs in order at each
	// position, and a value that holds another (or its own lines) must go
	// whole.
	slices.SortFunc(ps, func(a, b pair) int {
		return cmp.Or(cmp.Compare(len(b.value), len(a.value)), strings.Compare(a.value, b.value), strings.Compare(a.ref, b.ref))
	})
	args := make([]string, 0, 2*len(ps))
	for _, p := range ps {
		args = append(args, p.value, p.ref)
	}
	return Redactor{r: strings.NewReplacer(args...), newlines: newlines}
}

// Redact returns s with every secret value, the value without its
// surrounding space, and every line of a multi-line one (of at least 8
// bytes, spaces trimmed), replaced by its reference.
// With a multi-line secret, s's line ends are made "\n" first: a container
// on a terminal writes "\r\n", which the whole value would not match, and
// its short lines (a PEM key's last) would be left.
func (r Redactor) Redact(s string) string {
	if r.r == nil {
		return s
	}
	if r.newlines > 0 {
		s = strings.ReplaceAll(s, "\r\n", "\n") // so were the values
	}
	return r.r.Replace(s)
}

// Newlines is the most newlines in one secret value: a text cut to its
// last n lines holds every secret value it overlaps whole only when cut to
// n plus this many.
func (r Redactor) Newlines() int { return r.newlines }
