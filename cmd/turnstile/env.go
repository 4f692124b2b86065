package main

import (
	"fmt"
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

// bindEnv sets each marked flag that the command line left alone from its
// variable, if that is set.
func bindEnv(cmd *cobra.Command, getenv func(string) string) error {
	var err error
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
		}
	})
	return err
}
