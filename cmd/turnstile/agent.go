package main

import (
	"github.com/spf13/cobra"

	"github.com/turnstile-dev/turnstile/internal/agent"
)

// agentCmd runs the workspace agent: the process of the default workspace
// image, which serve builds from this very binary (see agentimage.go).
func (a *app) agentCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "agent [serve|healthcheck]",
		Short: "Run the workspace agent of the default image (inside a workspace container)",
		Long: `Run the tiny workspace agent: it serves GET /healthz on :8080 and ends on SIGTERM.
'agent healthcheck' probes it, for the image's HEALTHCHECK. Environment:
AGENT_ADDR, AGENT_START_DELAY (ready only after this long), AGENT_EXIT_AFTER and
AGENT_EXIT_CODE (exit with that code after that long).`,
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			if code := agent.Main(cmd.Context(), args, a.getenv, a.err); code != 0 {
				return &codedError{code: code, quiet: true}
			}
			return nil
		},
	}
}
