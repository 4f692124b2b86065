package fsm

import (
	"fmt"
	"regexp"
	"strings"
)

// SecretScheme starts an env value that refers to a secret by name instead
// of holding it: secret://NAME. Only the reference is ever in commands,
// events and the read model; the provisioner worker resolves it just
// before it starts the container.
const SecretScheme = "secret://"

// MaxSecretNameLen bounds a secret's name.
const MaxSecretNameLen = 128

// A secret name is also a file name in a secrets directory: no '/', and no
// leading '.' or '-' (no ".", "..", hidden temp files or flag look-alikes).
var secretNamePattern = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`)

// ValidateSecretName checks a secret's name: 1-128 characters of A-Z, a-z,
// 0-9, '_', '.' and '-', not starting with '.' or '-'.
func ValidateSecretName(name string) error {
	if !secretNamePattern.MatchString(name) {
		return fmt.Errorf("secret name %q is invalid: use 1-%d characters of A-Z, a-z, 0-9, '_', '.' and '-', not starting with '.' or '-'",
			truncate(name, 140), MaxSecretNameLen)
	}
	return nil
}

// SecretRef returns the secret name of an env value of the form
// secret://NAME, and whether v has that form at all (the name may still be
// invalid; see ValidateSecretName).
func SecretRef(v string) (name string, ok bool) {
	return strings.CutPrefix(v, SecretScheme)
}

// SecretRefs returns the spec's secret references, env key to secret name.
func (s Spec) SecretRefs() map[string]string {
	var refs map[string]string
	for k, v := range s.Env {
		if name, ok := SecretRef(v); ok {
			if refs == nil {
				refs = map[string]string{}
			}
			refs[k] = name
		}
	}
	return refs
}
