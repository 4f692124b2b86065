package reliability_test

import (
	"testing"
	"time"

	"github.com/turnstile-dev/turnstile/internal/testenv"
)

// TestTwoServes runs two serve processes on the same external nats-server
// and the same PostgreSQL, so two engines, two workers and two projectors
// share the durable consumers and the read model, and kill -9's one of them
// at random moments of the load, restarting it each time. The CAS on
// append fences the engines and the checkpoint CAS fences the projectors:
// afterwards every command has exactly one outcome, nothing is duplicated,
// every workspace's commands were decided in command-stream order across
// the two engines, every history is legal and the read model equals a
// rebuild.
func TestTwoServes(t *testing.T) {
	gate(t)
	commands := pick(1000, 10000)
	workspaces := pick(100, 500)
	kills := pick(3, 20)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d: %d commands over %d workspaces, %d kills of the second serve", seed, commands, workspaces, kills)

	ns := startNATSServer(t)
	pg := testenv.StartPostgres(t)
	dbURL := pg.NewDatabase(t)
	// One after the other: both apply the read model's migrations at start.
	a := startServe(t, serveOptions{databaseURL: dbURL, natsURL: ns.url()})
	b := startServe(t, serveOptions{databaseURL: dbURL, natsURL: ns.url()})
	cl := newClient(t, connect(t, ns.url(), "reliability-load"))
	l := newLoad(t, cl, workspaces, 32)

	// A kill -9'd engine's unacked commands come back after the consumer's
	// AckWait (30 s), so the short form allows for a few of those.
	loadTime := loadWithKills(t, b, l, seed, commands, kills, pick(5*time.Minute, 40*time.Minute))
	// The survivor never stopped serving.
	if err := a.ready(10 * time.Second); err != nil {
		t.Fatalf("the serve that was not killed: %v", err)
	}

	waitQuiet(t, cl, dbURL, l.workspaces, pick(3*time.Minute, 5*time.Minute))
	f := checkStream(t, cl, l.commands())
	// Across the two engines: each workspace's partition has one engine at
	// a time, and a takeover decides the partition's unfinished commands
	// first.
	misordered := checkOrder(t, cl, f, true)
	checkAuditCLI(t, ns.url())
	checkRebuild(t, ns.url(), dbURL, "")
	if b.kills != kills {
		t.Errorf("%d kills, want %d", b.kills, kills)
	}
	report{Scenario: "two-serves", Long: long(), Commands: len(l.commands()), Workspaces: workspaces,
		Seconds: loadTime.Seconds(), Faults: b.kills, FaultKind: "kill -9 of one of two serves (external nats-server)",
		Resends: l.resends.Load(), StreamRecords: f.Records, Events: f.Events, Outcomes: f.Outcomes,
		Lost: f.Lost + int(l.lost.Load()), Duplicated: f.Duplicated, Misordered: misordered}.log(t)
}
