package reliability_test

import (
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/turnstile-dev/turnstile/internal/testenv"
)

// long reports whether the long form was asked for.
func long() bool { return os.Getenv("TURNSTILE_RELIABILITY_LONG") == "1" }

// pick returns short or, in the long form, long.
func pick[T any](short, long_ T) T {
	if long() {
		return long_
	}
	return short
}

// TestCrash kill -9's serve (embedded NATS included) at random moments of
// a load of random user commands and restarts it on the same data dir and
// ports each time. PostgreSQL is external, so only serve dies. Afterwards:
// every command has exactly one outcome, no event is duplicated, every
// workspace's commands were decided in stream order, every history is
// legal, `audit --all` passes and the read model equals a rebuild.
func TestCrash(t *testing.T) {
	gate(t)
	commands := pick(1000, 10000)
	workspaces := pick(100, 500)
	kills := pick(3, 24)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d: %d commands over %d workspaces, %d kills", seed, commands, workspaces, kills)

	pg := testenv.StartPostgres(t)
	dbURL := pg.NewDatabase(t)
	s := startServe(t, serveOptions{databaseURL: dbURL})
	natsURL := fmt.Sprintf("nats://127.0.0.1:%d", s.natsPort)
	nc := connect(t, natsURL, "reliability-load")
	cl := newClient(t, nc)
	l := newLoad(t, cl, workspaces, 32)

	loadTime := loadWithKills(t, s, l, seed, commands, kills, pick(3*time.Minute, 40*time.Minute))

	waitQuiet(t, cl, dbURL, l.workspaces, pick(2*time.Minute, 5*time.Minute))
	f := checkStream(t, cl, l.commands())
	checkOrder(t, cl, f, true)
	checkAuditCLI(t, natsURL)
	checkRebuild(t, natsURL, dbURL, s.dataDir())
	t.Logf("serve was restarting for %v in total", s.down)
	if s.kills != kills {
		t.Errorf("%d kills, want %d", s.kills, kills)
	}
	report{Scenario: "crash", Long: long(), Commands: len(l.commands()), Workspaces: workspaces,
		Seconds: loadTime.Seconds(), Faults: s.kills, FaultKind: "kill -9 of serve (embedded NATS)",
		Resends: l.resends.Load(), StreamRecords: f.Records, Events: f.Events, Outcomes: f.Outcomes,
		Lost: f.Lost + int(l.lost.Load()), Duplicated: f.Duplicated}.log(t)
}
