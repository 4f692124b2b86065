package main

import (
	"os"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// TestEveryFlagIsDocumented: every command's flags, and the variable of
// each flag that has one, are named in docs/operations.md, so a flag added
// without its documentation fails here rather than in an operator's hands
// (an audit found two flags' documented defaults had drifted).
func TestEveryFlagIsDocumented(t *testing.T) {
	raw, err := os.ReadFile("../../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	ops := string(raw)
	a := &app{getenv: func(string) string { return "" }}
	root := a.rootCmd()
	root.InitDefaultCompletionCmd() // cobra adds it at Execute; its flags are cobra's own, checked too
	seen := 0
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		check := func(f *pflag.Flag) {
			if f.Name == "help" {
				return
			}
			seen++
			if !strings.Contains(ops, "`--"+f.Name+"`") && !strings.Contains(ops, "`--"+f.Name+" ") {
				t.Errorf("%s: --%s is not in docs/operations.md (want it in backquotes: `--%s`)", c.CommandPath(), f.Name, f.Name)
			}
			for _, v := range f.Annotations[envAnnotation] {
				if !strings.Contains(ops, "`"+v+"`") {
					t.Errorf("%s: --%s's variable %s is not in docs/operations.md", c.CommandPath(), f.Name, v)
				}
			}
		}
		c.LocalNonPersistentFlags().VisitAll(check)
		c.PersistentFlags().VisitAll(check)
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
	if seen < 50 {
		t.Fatalf("checked only %d flags: the walk of the command tree is broken", seen)
	}
}
