// Command agent is the tiny workspace agent of Turnstile's test image: it
// serves GET /healthz on :8080 and ends promptly on SIGTERM. See
// internal/agent for its environment variables.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/turnstile-dev/turnstile/internal/agent"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	code := agent.Main(ctx, os.Args[1:], os.Getenv, os.Stderr)
	stop()
	os.Exit(code)
}
