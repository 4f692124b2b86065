package main

import (
	"fmt"
	"maps"
	"strconv"
	"strings"
	"unicode"

	"github.com/docker/go-units"
	"github.com/spf13/pflag"

	"github.com/turnstile-dev/turnstile/fsm"
)

// specFlags are the flags that describe a spec: create's and configure's.
type specFlags struct {
	image   string
	env     []string
	secrets []string // --secret-env KEY=NAME: env KEY=secret://NAME
	labels  []string
	cpus    float64
	memory  string
	profile string
	replace bool
}

func (s *specFlags) register(fs *pflag.FlagSet, configure bool) {
	fs.StringVar(&s.image, "image", "", "image to run (default: the provisioner's default image)")
	fs.StringArrayVar(&s.env, "env", nil, "environment variable KEY=VALUE for the container (repeatable); plain values are stored in the event history in plaintext: for secrets use KEY=secret://NAME")
	fs.StringArrayVar(&s.secrets, "secret-env", nil, "environment variable KEY=NAME whose value is the secret NAME ('turnstile secret set NAME'); the same as --env KEY=secret://NAME (repeatable)")
	fs.StringArrayVar(&s.labels, "label", nil, "container label KEY=VALUE, applied as turnstile.label.KEY (repeatable; keys under turnstile., com.docker., io.docker., org.dockerproject. and org.opencontainers. are reserved)")
	fs.Float64Var(&s.cpus, "cpus", 0, "CPU limit, in CPUs (0: serve's default)")
	fs.StringVar(&s.memory, "memory", "", "memory limit, such as 512m or 2g (empty: serve's default)")
	fs.StringVar(&s.profile, "profile", "", "security profile: restricted or standard, if serve allows it (empty: serve's default, restricted)")
	if configure {
		fs.BoolVar(&s.replace, "replace", false, "replace the whole spec instead of changing the given fields of the current one")
	}
}

// given reports whether any spec flag was set.
func (s *specFlags) given(fs *pflag.FlagSet) bool {
	for _, n := range []string{"image", "env", "secret-env", "label", "cpus", "memory", "profile"} {
		if fs.Changed(n) {
			return true
		}
	}
	return false
}

// apply returns base with the flags that were set applied; every error
// names its flag.
func (s *specFlags) apply(fs *pflag.FlagSet, base fsm.Spec) (fsm.Spec, error) {
	spec := base.Clone()
	if fs.Changed("image") {
		spec.Image = s.image
	}
	if fs.Changed("cpus") {
		spec.CPUs = s.cpus
	}
	if fs.Changed("profile") {
		spec.Profile = s.profile
	}
	if fs.Changed("memory") {
		spec.MemoryBytes = 0
		if s.memory != "" && s.memory != "0" {
			n, err := units.RAMInBytes(s.memory)
			if err != nil {
				return spec, fmt.Errorf("--memory %q: use a size such as 512m or 2g", s.memory)
			}
			spec.MemoryBytes = n
		}
	}
	var err error
	if spec.Env, err = mergePairs("--env", spec.Env, s.env); err != nil {
		return spec, err
	}
	refs, err := s.secretRefs()
	if err != nil {
		return spec, err
	}
	if spec.Env, err = mergePairs("--secret-env", spec.Env, refs); err != nil {
		return spec, err
	}
	if spec.Labels, err = mergePairs("--label", spec.Labels, s.labels); err != nil {
		return spec, err
	}
	if err := fsm.ValidateSpec(spec); err != nil {
		return spec, fmt.Errorf("spec: %w", err)
	}
	return spec, nil
}

// check reports the errors of the flags themselves (a size or a pair that
// does not parse), which need no base spec, so they are found before
// connecting.
func (s *specFlags) check(fs *pflag.FlagSet) error {
	if fs.Changed("memory") && s.memory != "" && s.memory != "0" {
		if _, err := units.RAMInBytes(s.memory); err != nil {
			return fmt.Errorf("--memory %q: use a size such as 512m or 2g", s.memory)
		}
	}
	if _, err := mergePairs("--env", nil, s.env); err != nil {
		return err
	}
	if _, err := s.secretRefs(); err != nil {
		return err
	}
	_, err := mergePairs("--label", nil, s.labels)
	return err
}

// secretRefs turns each --secret-env KEY=NAME into KEY=secret://NAME.
func (s *specFlags) secretRefs() ([]string, error) {
	out := make([]string, 0, len(s.secrets))
	for _, p := range s.secrets {
		k, name, ok := strings.Cut(p, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--secret-env %q: use KEY=NAME", p)
		}
		if err := fsm.ValidateSecretName(name); err != nil {
			return nil, fmt.Errorf("--secret-env %q: %w", p, err)
		}
		out = append(out, k+"="+fsm.SecretScheme+name)
	}
	return out, nil
}

// secretLooking are the endings of variable names that usually hold
// secrets.
var secretLooking = []string{"TOKEN", "PASSWORD", "PASSWD", "SECRET", "KEY", "CREDENTIALS", "CREDENTIAL"}

// plainSecretWarnings warns about each --env given with a plain value whose
// name looks like a secret's: that value is kept in plaintext in the event
// history forever. It is not refused, for compatibility.
func (s *specFlags) plainSecretWarnings() []string {
	var out []string
	for _, p := range s.env {
		k, v, ok := strings.Cut(p, "=")
		if !ok || v == "" {
			continue
		}
		if _, ref := fsm.SecretRef(v); ref {
			continue
		}
		upper := strings.ToUpper(k)
		for _, end := range secretLooking {
			if strings.HasSuffix(upper, end) {
				out = append(out, fmt.Sprintf("warning: --env %s has a plain value, which is kept in plaintext in the event history, the read model and every response; "+
					"for a secret, run 'turnstile secret set NAME' and pass --env %s=%sNAME", k, k, fsm.SecretScheme))
				break
			}
		}
	}
	return out
}

func mergePairs(flag string, into map[string]string, pairs []string) (map[string]string, error) {
	if len(pairs) == 0 {
		return into, nil
	}
	out := maps.Clone(into)
	if out == nil {
		out = map[string]string{}
	}
	for _, p := range pairs {
		k, v, ok := strings.Cut(p, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("%s %q: use KEY=VALUE", flag, p)
		}
		out[k] = v
	}
	return out, nil
}

// describeSpec is a one-line summary of a spec: fields separated by
// spaces, env and label values quoted where they hold a space or a quote
// (specValue).
func describeSpec(s fsm.Spec) string {
	var parts []string
	img := s.Image
	if img == "" {
		img = "(default image)"
	}
	parts = append(parts, img)
	if s.CPUs > 0 {
		parts = append(parts, fmt.Sprintf("cpus=%g", s.CPUs))
	}
	if s.MemoryBytes > 0 {
		parts = append(parts, "memory="+units.BytesSize(float64(s.MemoryBytes)))
	}
	if s.Profile != "" {
		parts = append(parts, "profile="+s.Profile)
	}
	for _, k := range sortedKeys(s.Env) {
		parts = append(parts, k+"="+specValue(s.Env[k]))
	}
	for _, k := range sortedKeys(s.Labels) {
		parts = append(parts, "label:"+k+"="+specValue(s.Labels[k]))
	}
	return strings.Join(parts, " ")
}

// specValue is an env or label value as describeSpec shows it: quoted
// (strconv.Quote) when it holds a space of any kind or a double quote,
// else as it is. A value is the workspace owner's free text: bare, "1
// profile=restricted" would read as a field of the spec's own. Keys, the
// image and the profile cannot hold spaces (fsm.ValidateSpec).
func specValue(v string) string {
	if strings.ContainsFunc(v, func(r rune) bool { return r == '"' || unicode.IsSpace(r) }) {
		return strconv.Quote(v)
	}
	return v
}
