package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	os.Exit(runWithSignals(func(ctx context.Context) int {
		return run(ctx, os.Args[1:], streams{in: os.Stdin, out: os.Stdout, err: os.Stderr}, os.Getenv)
	}))
}

// runWithSignals runs fn with a context that ends at the first SIGINT or
// SIGTERM. That signal starts a clean stop; the signals' default action
// is back before fn sees it, so that a second Ctrl-C ends the process
// when the stop is slow (a stuck drain, a long --shutdown-timeout).
func runWithSignals(fn func(context.Context) int) int {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	go func() {
		select {
		case <-sigs:
			signal.Stop(sigs) // before cancel: no window that swallows a second one
			cancel()
		case <-ctx.Done():
		}
	}()
	return fn(ctx)
}
