package main

import (
	"strings"
	"testing"
)

// TestHelpSaysWhatIsTrue: help texts the docs contradicted. The lifecycle
// commands go through the HTTP API when its URL is known, not only over
// NATS; --http-max-waits caps waits, follow streams and whole-stream
// audits together; every explain --deadline-* flag is ignored over HTTP.
func TestHelpSaysWhatIsTrue(t *testing.T) {
	help := func(t *testing.T, args ...string) string {
		t.Helper()
		code, out, errs := runCLI(t, nil, append(args, "--help")...)
		if code != 0 {
			t.Fatalf("%v --help: exit %d\n%s", args, code, errs)
		}
		return out
	}
	t.Run("RootGroups", func(t *testing.T) {
		out := help(t)
		if strings.Contains(out, "over NATS") || !strings.Contains(out, "Lifecycle commands:") {
			t.Fatalf("root --help groups the lifecycle commands as NATS-only:\n%s", out)
		}
	})
	t.Run("HTTPMaxWaits", func(t *testing.T) {
		line := flagLine(t, help(t, "serve"), "--http-max-waits")
		for _, want := range []string{"wait", "follow", "/v1/audit", "together"} {
			if !strings.Contains(line, want) {
				t.Errorf("serve --help: --http-max-waits does not mention %q: %s", want, line)
			}
		}
	})
	t.Run("ExplainDeadlines", func(t *testing.T) {
		out := help(t, "explain")
		for _, f := range []string{"--deadline-provisioning", "--deadline-stopping", "--deadline-deleting"} {
			if line := flagLine(t, out, f); !strings.Contains(line, "(direct path only)") {
				t.Errorf("explain --help: %s does not say it is for the direct path only: %s", f, line)
			}
		}
	})
}

// flagLine is the line of help text that describes flag.
func flagLine(t *testing.T, help, flag string) string {
	t.Helper()
	for line := range strings.SplitSeq(help, "\n") {
		if strings.Contains(line, flag+" ") {
			return line
		}
	}
	t.Fatalf("no %s in:\n%s", flag, help)
	return ""
}
