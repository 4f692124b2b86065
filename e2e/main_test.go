package e2e_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain builds the binary, runs the tests (runMain) and fails the
// package if any test leaves a goroutine behind.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(mainFunc(func() int { return runMain(m) }))
}

// mainFunc is a goleak.TestingM that runs f: runMain wraps m.Run with the
// build of the binary.
type mainFunc func() int

func (f mainFunc) Run() int { return f() }
