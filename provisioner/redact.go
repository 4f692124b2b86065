package provisioner

import (
	"cmp"
	"slices"
	"strings"

	"github.com/turnstile-dev/turnstile/fsm"
)

// Redactor replaces secret values in a text with their references
// (secret://NAME). The zero Redactor changes nothing.
type Redactor struct{ r *strings.Replacer }

// NewRedactor returns the Redactor of the secret references refs (env key
// to secret name, fsm.Spec.SecretRefs) as resolved into resolved.
func NewRedactor(refs map[string]string, resolved fsm.Spec) Redactor {
	type pair struct{ value, ref string }
	var ps []pair
	for key, name := range refs {
		if v := resolved.Env[key]; v != "" {
			ps = append(ps, pair{v, fsm.SecretScheme + name})
		}
	}
	if len(ps) == 0 {
		return Redactor{}
	}
	// Longest first: the replacer tries its pairs in order at each
	// position, and a value that holds another must go whole.
	slices.SortFunc(ps, func(a, b pair) int {
		return cmp.Or(cmp.Compare(len(b.value), len(a.value)), strings.Compare(a.value, b.value))
	})
	args := make([]string, 0, 2*len(ps))
	for _, p := range ps {
		args = append(args, p.value, p.ref)
	}
	return Redactor{strings.NewReplacer(args...)}
}

// Redact returns s with every secret value replaced by its reference.
func (r Redactor) Redact(s string) string {
	if r.r == nil {
		return s
	}
	return r.r.Replace(s)
}
