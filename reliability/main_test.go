package reliability_test

import (
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/turnstile-dev/turnstile/internal/testenv"
)

// binDir holds the turnstile binary (and nats-server, once built) that
// TestMain builds.
var binDir string

// TestMain builds the binary once and fails the package if a test leaves a
// goroutine behind.
func TestMain(m *testing.M) {
	if !enabled() {
		// Each test says so itself (gate); nothing to build.
		os.Exit(m.Run())
	}
	dir, remove, err := testenv.BuildTurnstile("turnstile-reliability-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	code := goleakRun(m)
	remove()
	os.Exit(code)
}

// enabled reports whether the suite should run. The short form runs by
// default, in `go test ./...` and so in CI; TURNSTILE_RELIABILITY=0 turns it
// off (for a quick inner loop), TURNSTILE_RELIABILITY_LONG=1 asks for the
// long form.
func enabled() bool {
	return os.Getenv("TURNSTILE_RELIABILITY") != "0" || long()
}

// gate skips a test, loudly, when the suite was turned off.
func gate(t *testing.T) {
	t.Helper()
	if !enabled() {
		t.Skip("reliability suite turned off by TURNSTILE_RELIABILITY=0; unset it to run the short form, or set TURNSTILE_RELIABILITY_LONG=1 for the long form (docs/reliability.md)")
	}
}

// goleakRun runs the tests and then verifies no goroutine is left.
func goleakRun(m *testing.M) int {
	code := m.Run()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			return 1
		}
	}
	return code
}
