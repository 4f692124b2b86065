package reliability_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"time"

	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/internal/testenv"
)

// TestScaleOut is issue 13's acceptance scenario: three nats-server
// processes clustered over loopback routes, every stream at 3 replicas,
// three serves on the same PostgreSQL database each given all three URLs,
// and a load of random user commands over NATS while faults strike one at
// a time: kill -9 of a NATS node (the meta leader first, then the event
// stream's leader, then in the long form the meta leader, any stream's
// leader or any node) alternating with kill -9 of a random serve. Each
// victim is restarted and caught up before the next fault, and the load
// (at least commands, resent under their ids until they have an outcome)
// runs until the last fault is over, so every fault strikes under load.
// Afterwards: every command has exactly one outcome, none is duplicated,
// every workspace's commands were decided in command-stream order across
// the engines (strict), every history is legal, `audit --all` passes and
// the read model equals a rebuild.
//
// Each fault logs its takeover: how long the streams the victim led had no
// leader (node kills), and how long until every command that had no
// outcome at the kill had one, before the victim was restarted (so the
// survivors did the work).
func TestScaleOut(t *testing.T) {
	gate(t)
	commands := pick(800, 10000)
	workspaces := pick(80, 500)
	faults := pick(3, 12)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d: at least %d commands over %d workspaces, %d faults (NATS node and serve kill -9's, alternating)",
		seed, commands, workspaces, faults)

	c := startNATSProcessCluster(t)
	pg := testenv.StartPostgres(t)
	dbURL := pg.NewDatabase(t)
	names := events.NewNames("")
	streams := []string{names.CommandStream(), names.SystemStream(), names.EventStream()}
	// One after the other: each applies the read model's migrations at start.
	var serves []*serve
	for range 3 {
		serves = append(serves, startServe(t, serveOptions{databaseURL: dbURL, natsURL: c.urls(), env: []string{"TURNSTILE_REPLICAS=3"}}))
	}
	c.waitCurrent(streams, time.Minute)
	cl := newClient(t, connect(t, c.urls(), "reliability-load"))
	l := newLoad(t, cl, workspaces, 16)

	ctx, cancel := context.WithTimeout(context.Background(), pick(150*time.Second, 40*time.Minute))
	defer cancel()
	start := time.Now()
	var faultsOver atomic.Bool
	loadDone := make(chan struct{})
	go func() {
		defer close(loadDone)
		l.run(ctx, seed, func(i int64) bool { return i < int64(commands) || !faultsOver.Load() })
	}()
	// A fault's wait that fails the test ends the load before the test
	// does: its senders report through t.
	defer func() {
		cancel()
		<-loadDone
	}()

	// Faults one after another, each once the previous victim is back and
	// caught up and the load has had a share of its commands since, from
	// this goroutine: the cluster's waits fail the test.
	r := rand.New(rand.NewPCG(seed, 1))
	var nodeKills, serveKills int
	var worstLeaderless, worstTakeover time.Duration
	for i := range faults {
		at := l.done.Load() + int64(commands/(faults+1))
		testenv.Eventually(t, 2*time.Minute, "the load to reach its next fault", func() bool {
			return l.done.Load() >= at || ctx.Err() != nil
		})
		if ctx.Err() != nil {
			break
		}
		var what string
		var leaderless time.Duration
		var unanswered []string
		var killed time.Time
		var restart func()
		if i%2 == 1 {
			victim := r.IntN(len(serves))
			what = fmt.Sprintf("serve %d", victim)
			unanswered, killed = l.unanswered(), time.Now()
			serves[victim].kill9()
			serveKills++
			restart = func() {
				if err := serves[victim].restart(); err != nil {
					t.Fatalf("restart of serve %d: %v", victim, err)
				}
			}
		} else {
			var victim int
			switch {
			case i == 0 || (i > 2 && r.IntN(3) == 0):
				victim, what = c.waitMetaLeader(30*time.Second), "meta leader"
			case i == 2 || r.IntN(2) == 0:
				st := streams[r.IntN(len(streams))]
				if i == 2 {
					st = names.EventStream()
				}
				victim, what = c.waitStreamLeader(st, 30*time.Second), "leader of "+st
			default:
				victim, what = r.IntN(len(c.nodes)), "a node"
			}
			what = fmt.Sprintf("NATS node %s (%s)", c.nodes[victim].name, what)
			var led []string
			for _, st := range streams {
				if c.streamLeader(st) == victim {
					led = append(led, st)
				}
			}
			unanswered, killed = l.unanswered(), time.Now()
			c.kill9(victim)
			nodeKills++
			if len(led) == 0 {
				what += ", leading no stream"
			} else {
				for _, st := range led {
					c.waitStreamLeader(st, time.Minute)
				}
				leaderless = time.Since(killed)
				worstLeaderless = max(worstLeaderless, leaderless)
				what += fmt.Sprintf(", leading %v: new leaders after %v", led, leaderless.Round(time.Millisecond))
			}
			restart = func() {
				c.restart(victim)
				c.waitHealthy(2 * time.Minute)
				c.waitCurrent(streams, time.Minute)
			}
		}
		// Before the restart: a command the victim held is decided by a
		// surviving engine (or, after a node kill, through another node).
		testenv.Eventually(t, 2*time.Minute, fmt.Sprintf("the %d commands without an outcome at the kill to have one", len(unanswered)), func() bool {
			return l.answered(unanswered) || ctx.Err() != nil
		})
		takeover := time.Since(killed)
		worstTakeover = max(worstTakeover, takeover)
		t.Logf("fault %d at %s: killed %s; the %d commands in flight all had outcomes %v later",
			i+1, killed.UTC().Format("15:04:05.000"), what, len(unanswered), takeover.Round(time.Millisecond))
		restart()
	}
	faultsOver.Store(true)
	<-loadDone
	loadTime := time.Since(start)
	if t.Failed() {
		t.FailNow()
	}
	if ctx.Err() != nil {
		t.Fatalf("the load did not finish in time: %d commands with an outcome", l.done.Load())
	}
	for i, s := range serves {
		if err := s.ready(10 * time.Second); err != nil {
			t.Fatalf("serve %d after the faults: %v", i, err)
		}
	}

	waitQuiet(t, cl, dbURL, l.workspaces, pick(2*time.Minute, 5*time.Minute))
	f := checkStream(t, cl, l.commands())
	// Across engines: each workspace's partition has one engine at a time,
	// and a takeover decides the partition's unfinished commands first.
	misordered := checkOrder(t, cl, f, true)
	checkAuditCLI(t, c.urls())
	checkRebuild(t, c.urls(), dbURL, "")
	t.Logf("worst: %v without a stream leader, %v until the commands in flight at a kill had outcomes", worstLeaderless, worstTakeover)
	if nodeKills+serveKills != faults || nodeKills == 0 || serveKills == 0 {
		t.Errorf("%d node kills and %d serve kills, want %d in all and at least one of each", nodeKills, serveKills, faults)
	}
	report{Scenario: "scale-out", Long: long(), Commands: len(l.commands()), Workspaces: workspaces,
		Seconds: loadTime.Seconds(), Faults: nodeKills + serveKills,
		FaultKind: fmt.Sprintf("kill -9 of a nats-server process (meta leader, stream leader, any; %d) and of one of 3 serves (%d), 3-node R3 cluster", nodeKills, serveKills),
		Resends:   l.resends.Load(), StreamRecords: f.Records, Events: f.Events, Outcomes: f.Outcomes,
		Lost: f.Lost + int(l.lost.Load()), Duplicated: f.Duplicated, Misordered: misordered}.log(t)
}
