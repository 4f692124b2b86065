package secrets

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/turnstile-dev/turnstile/fsm"
)

// Source gives secret values by name. Get returns an error matching
// ErrNotFound when the source has no such secret.
type Source interface {
	Get(ctx context.Context, name string) ([]byte, error)
}

var _ Source = (*Store)(nil)

// MissingError is a reference to a secret that no source has.
type MissingError struct {
	Name string // the secret
	Env  string // the variable that refers to it
	// Where lists the places looked in.
	Where []string
}

func (e *MissingError) Error() string {
	return fmt.Sprintf("secret %q (env %s) is not set: looked in %s; set it with 'turnstile secret set %s' and start the workspace again",
		e.Name, e.Env, strings.Join(e.Where, ", "), e.Name)
}

// Resolver resolves a spec's secret://NAME references, asking its sources
// in order; the first that has the name wins.
type Resolver struct {
	Sources []Source
}

// NewResolver returns a resolver over sources, asked in the order given.
func NewResolver(sources ...Source) *Resolver { return &Resolver{Sources: sources} }

// Resolve returns spec with every secret reference replaced by its value;
// spec itself is not changed. Errors name the secret and the variable,
// never a value: *MissingError when no source has it, another error when a
// source cannot be read or the value cannot be an env value.
func (r *Resolver) Resolve(ctx context.Context, spec fsm.Spec) (fsm.Spec, error) {
	refs := spec.SecretRefs()
	if len(refs) == 0 {
		return spec, nil
	}
	out := spec.Clone()
	for _, env := range slices.Sorted(maps.Keys(refs)) {
		name := refs[env]
		if err := fsm.ValidateSecretName(name); err != nil {
			return fsm.Spec{}, fmt.Errorf("env %s: %w", env, err)
		}
		v, err := r.get(ctx, name, env)
		if err != nil {
			return fsm.Spec{}, err
		}
		out.Env[env] = v
	}
	return out, nil
}

func (r *Resolver) get(ctx context.Context, name, env string) (string, error) {
	missing := &MissingError{Name: name, Env: env}
	for _, src := range r.Sources {
		v, err := src.Get(ctx, name)
		if errors.Is(err, ErrNotFound) {
			missing.Where = append(missing.Where, where(src))
			continue
		}
		if err != nil {
			return "", fmt.Errorf("secret %q (env %s): %w", name, env, err)
		}
		if err := ValidateValue(v); err != nil {
			return "", fmt.Errorf("secret %q (env %s) in %s: %w", name, env, where(src), err)
		}
		return string(v), nil
	}
	if len(missing.Where) == 0 {
		missing.Where = []string{"no secret source (serve has none configured)"}
	}
	return "", missing
}

func where(src Source) string {
	if s, ok := src.(*Store); ok {
		return s.Dir()
	}
	return fmt.Sprintf("%T", src)
}
