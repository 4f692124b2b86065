package main

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// envAnnotation marks the flags that a TURNSTILE_* variable can set: every
// connection flag and every serve flag. Flags that name one invocation's
// data (--command-id, --env, --image) are left out on purpose: a variable
// would silently apply them to every command.
const envAnnotation = "turnstile_env"

// envName is the variable for a flag: TURNSTILE_ and the name in upper case
// with '-' as '_'.
func envName(flag string) string {
	return "TURNSTILE_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// markEnv lets envName(name) set the flag and says so in its help.
func markEnv(fs *pflag.FlagSet, name string) {
	f := fs.Lookup(name)
	if f == nil {
		panic("markEnv: no flag " + name) // a programming error, caught by any test
	}
	_ = fs.SetAnnotation(name, envAnnotation, []string{envName(name)})
	f.Usage += " [$" + envName(name) + "]"
}

// envSetting is a flag's value that came from its variable.
type envSetting struct {
	variable string
	raw      string // the variable's value
	shown    string // the flag's value as it prints it (pflag.Value.String)
}

// bindEnv sets each marked flag that the command line left alone from its
// variable, if that is set, and returns those it set, by flag name.
func bindEnv(cmd *cobra.Command, getenv func(string) string) (map[string]envSetting, error) {
	var err error
	set := map[string]envSetting{}
	fs := cmd.Flags()
	fs.VisitAll(func(f *pflag.Flag) {
		if err != nil || f.Changed {
			return
		}
		if _, ok := f.Annotations[envAnnotation]; !ok {
			return
		}
		name := envName(f.Name)
		v := getenv(name)
		if v == "" {
			return
		}
		if serr := fs.Set(f.Name, v); serr != nil {
			err = usageError(fmt.Errorf("%s=%q: %v", name, v, serr))
			return
		}
		set[f.Name] = envSetting{variable: name, raw: v, shown: f.Value.String()}
	})
	return set, err
}

// isSecretFlag says whether a flag may carry a password or a token: a
// message names its variable without its value.
func isSecretFlag(name string) bool {
	switch name {
	case "api-token", "nats-token", "nats-password", "nats-url", "database-url":
		return true
	}
	return false
}

// namedByVariables is a usage error whose message names, for every flag
// fromEnv set, the variable rather than the flag: the checks that refuse
// a value (there are many, each naming "--flag VALUE") cannot tell where
// it came from, and "--output" is no help to someone who never typed it.
// The error's code and chain are kept.
func namedByVariables(err error, fromEnv map[string]envSetting) error {
	msg := err.Error()
	renamed := msg
	for _, flag := range slices.Sorted(maps.Keys(fromEnv)) {
		renamed = nameVariable(renamed, flag, fromEnv[flag])
	}
	if renamed == msg {
		return err
	}
	var ce *codedError
	if errors.As(err, &ce) {
		return &codedError{code: ce.code, err: &renamedError{msg: renamed, err: err}, quiet: ce.quiet}
	}
	return &renamedError{msg: renamed, err: err}
}

// nameVariable replaces in msg each "--flag VALUE" and "--flag:" (the
// forms the checks use) with the variable and its value. Other mentions
// of the flag (advice such as "pass --nats-url") are left as they are.
func nameVariable(msg, flag string, s envSetting) string {
	tok := "--" + flag
	name := s.variable
	if !isSecretFlag(flag) {
		name += "=" + strconv.Quote(s.raw)
	}
	var b strings.Builder
	for {
		i := strings.Index(msg, tok)
		if i < 0 {
			b.WriteString(msg)
			return b.String()
		}
		rest := msg[i+len(tok):]
		if rest != "" && isNameChar(rest[0]) { // a longer flag: --api-token-file
			b.WriteString(msg[:i+len(tok)])
			msg = rest
			continue
		}
		after, ok := strings.CutPrefix(rest, ":")
		if ok {
			after = ":" + after
		} else {
			after, ok = cutValue(rest, s)
		}
		if !ok {
			b.WriteString(msg[:i+len(tok)])
			msg = rest
			continue
		}
		b.WriteString(msg[:i])
		b.WriteString(name)
		msg = after
	}
}

// cutValue cuts " VALUE" off the front of rest, VALUE being the flag's
// value quoted or not, as the flag or as the variable gave it.
func cutValue(rest string, s envSetting) (string, bool) {
	for _, v := range []string{strconv.Quote(s.shown), strconv.Quote(s.raw), s.shown, s.raw} {
		if after, ok := strings.CutPrefix(rest, " "+v); ok && v != "" && (after == "" || !isNameChar(after[0])) {
			return after, true
		}
	}
	return "", false
}

func isNameChar(c byte) bool {
	return c == '-' || c == '_' || c == '.' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}

// renamedError is an error with its message reworded.
type renamedError struct {
	msg string
	err error
}

func (e *renamedError) Error() string { return e.msg }
func (e *renamedError) Unwrap() error { return e.err }
