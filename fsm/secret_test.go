package fsm_test

import (
	"strings"
	"testing"

	"github.com/turnstile-dev/turnstile/fsm"
)

// TestSecretReferences: an env value secret://NAME must name a secret of a
// safe shape (it becomes a file name in a secrets directory); anything
// else after the scheme is refused with a message naming the variable.
// Plain values are untouched. Issue 12 item 6.
func TestSecretReferences(t *testing.T) {
	for _, name := range []string{"db", "DB_PASSWORD", "tls.key", "a-b_c.d", "0", strings.Repeat("n", fsm.MaxSecretNameLen)} {
		t.Run("Accepted/"+name[:min(len(name), 16)], func(t *testing.T) {
			spec := fsm.Spec{Env: map[string]string{"X": fsm.SecretScheme + name}}
			if err := fsm.ValidateSpec(spec); err != nil {
				t.Fatalf("refused %q: %v", name, err)
			}
			if got := spec.SecretRefs(); got["X"] != name || len(got) != 1 {
				t.Fatalf("SecretRefs() = %v", got)
			}
		})
	}
	for _, name := range []string{"", ".", "..", "../etc/passwd", "a/b", ".hidden", "-flag", "a b", "ümlaut", "a\x00",
		strings.Repeat("n", fsm.MaxSecretNameLen+1)} {
		t.Run("Refused/"+name[:min(len(name), 16)], func(t *testing.T) {
			err := fsm.ValidateSpec(fsm.Spec{Env: map[string]string{"DB_PASSWORD": fsm.SecretScheme + name}})
			if err == nil || !strings.Contains(err.Error(), "spec.env[DB_PASSWORD]") || !strings.Contains(err.Error(), "secret name") {
				t.Fatalf("ValidateSpec of secret://%q = %v, want a refusal naming spec.env[DB_PASSWORD] and the secret name", name, err)
			}
			if fsm.ValidateSecretName(name) == nil {
				t.Fatalf("ValidateSecretName(%q) accepted it", name)
			}
		})
	}
	t.Run("PlainValuesUntouched", func(t *testing.T) {
		spec := fsm.Spec{Env: map[string]string{"A": "secret:/x", "B": "SECRET://x y", "C": "hunter2"}}
		if err := fsm.ValidateSpec(spec); err != nil {
			t.Fatal(err)
		}
		if refs := spec.SecretRefs(); refs != nil {
			t.Fatalf("SecretRefs() = %v, want none", refs)
		}
	})
}
