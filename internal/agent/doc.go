// Package agent is the tiny workspace agent: the process Turnstile's test
// image runs, and a stand-in for a real workspace image.
//
// Guarantees:
//   - Static and dependency-free (standard library only), so it runs in a
//     FROM scratch image built with CGO_ENABLED=0.
//   - GET /healthz answers 200 once the agent is ready and 503 before; the
//     same binary's "healthcheck" command probes it, for a Dockerfile
//     HEALTHCHECK without a shell.
//   - SIGTERM (and SIGINT) end it promptly with exit code 0.
//   - Failure modes on demand, through the environment: AGENT_START_DELAY
//     (ready only after that long: a slow-starting image) and
//     AGENT_EXIT_AFTER with AGENT_EXIT_CODE (exit with that code after that
//     long; 0s is an image that exits at once).
package agent
