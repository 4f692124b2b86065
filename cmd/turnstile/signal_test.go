package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

const signalHelperEnv = "TURNSTILE_TEST_SIGNAL_HELPER"

// TestSecondSignalEndsTheProcess: the first SIGINT starts a stop; when that
// stop hangs, a second SIGINT ends the process (the signal's default
// action) instead of being swallowed. It runs the test binary again as a
// process whose stop never ends.
func TestSecondSignalEndsTheProcess(t *testing.T) {
	if os.Getenv(signalHelperEnv) == "1" {
		os.Exit(runWithSignals(func(ctx context.Context) int {
			fmt.Println("ready")
			<-ctx.Done()
			fmt.Println("stopping")
			time.Sleep(time.Hour) // a stop that does not end by itself
			return 0
		}))
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestSecondSignalEndsTheProcess$")
	cmd.Env = append(os.Environ(), signalHelperEnv+"=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	waiting, ended := false, false
	t.Cleanup(func() {
		if ended {
			return
		}
		_ = cmd.Process.Kill()
		if !waiting {
			_ = cmd.Wait() // killed: its error says so
			return
		}
		t.Logf("helper killed: %v", <-done)
	})
	lines := bufio.NewScanner(out)
	next := func(want string) {
		t.Helper()
		if !lines.Scan() || lines.Text() != want {
			t.Fatalf("helper said %q (%v), want %q", lines.Text(), lines.Err(), want)
		}
	}
	next("ready")
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	next("stopping")
	waiting = true
	go func() { done <- cmd.Wait() }()
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		ended = true
		var ee *exec.ExitError
		ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus)
		if !errors.As(err, &ee) || !ok || !ws.Signaled() || ws.Signal() != syscall.SIGINT {
			t.Fatalf("helper ended with %v, want killed by the second SIGINT", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("a second SIGINT did not end the process in 30s")
	}
}
