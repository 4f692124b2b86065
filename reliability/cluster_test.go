package reliability_test

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/internal/testenv"
)

// TestCluster runs serve against a 3-node NATS cluster (in-process
// nats-servers routed over loopback, token auth of their own) with every
// stream at 3 replicas, and kills NATS nodes under a load of user commands:
// the meta leader first, then a stream leader, then (long form) random
// picks of either or any node, each restarted on its store and caught up
// before the next. Afterwards: every command has exactly one outcome, no
// event is duplicated, every workspace's commands were decided in command
// stream order, every history is legal, `audit --all` passes and the read
// model equals a rebuild. Each fault logs how long the streams were
// without a leader and how long the load went without an outcome.
func TestCluster(t *testing.T) {
	gate(t)
	commands := pick(600, 10000)
	workspaces := pick(60, 500)
	faults := pick(2, 12)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d: %d commands over %d workspaces, %d NATS node kills", seed, commands, workspaces, faults)

	c := testenv.StartNATSCluster(t, testenv.ClusterOptions{Token: natsToken})
	pg := testenv.StartPostgres(t)
	dbURL := pg.NewDatabase(t)
	s := startServe(t, serveOptions{databaseURL: dbURL, natsURL: c.URLs(), env: []string{"TURNSTILE_REPLICAS=3"}})
	names := events.NewNames("")
	streams := []string{names.CommandStream(), names.SystemStream(), names.EventStream()}
	for _, st := range streams {
		c.WaitStreamCurrent(t, st, 30*time.Second)
	}
	cl := newClient(t, connect(t, c.URLs(), "reliability-load"))
	l := newLoad(t, cl, workspaces, 16)

	ctx, cancel := context.WithTimeout(context.Background(), pick(3*time.Minute, 40*time.Minute))
	defer cancel()
	start := time.Now()
	loadDone := make(chan struct{})
	go func() {
		defer close(loadDone)
		l.run(ctx, seed, func(i int64) bool { return i < int64(commands) })
	}()

	// Faults at even points between 10% and 80% of the load, from this
	// goroutine: the cluster's waits fail the test.
	r := rand.New(rand.NewPCG(seed, 1))
	var worstLeaderless, worstStall time.Duration
	for i := range faults {
		at := int64(commands) * int64(10+70*i/max(faults-1, 1)) / 100
		testenv.Eventually(t, 2*time.Minute, "the load to reach its next fault", func() bool {
			return l.done.Load() >= at || ctx.Err() != nil
		})
		var victim int
		var what string
		switch {
		case i == 0 || (i > 1 && r.IntN(3) == 0):
			victim, what = c.WaitMetaLeader(t, 30*time.Second), "meta leader"
		case i == 1 || r.IntN(2) == 0:
			st := streams[r.IntN(len(streams))]
			if i == 1 {
				st = names.EventStream()
			}
			victim, what = c.WaitStreamLeader(t, st, 30*time.Second), "leader of "+st
		default:
			victim, what = r.IntN(len(c.Nodes())), "a node"
		}
		var led []string
		for _, st := range streams {
			if c.StreamLeader(st) == victim {
				led = append(led, st)
			}
		}
		begin := time.Now()
		c.Kill(t, victim)
		// Counted from the end of the kill: outcomes still arrive while the
		// server shuts down.
		killed, after := time.Now(), l.done.Load()
		for _, st := range led {
			c.WaitStreamLeader(t, st, 30*time.Second)
		}
		leaderless := time.Since(begin)
		testenv.Eventually(t, time.Minute, "outcomes again after the kill", func() bool {
			return l.done.Load() >= after+5 || ctx.Err() != nil
		})
		stall := time.Since(killed)
		worstLeaderless, worstStall = max(worstLeaderless, leaderless), max(worstStall, stall)
		t.Logf("fault %d: killed %s (%s, leading %v): new stream leaders %v after the kill began, 5 more outcomes %v after it ended",
			i+1, c.Nodes()[victim].Name, what, led, leaderless, stall)
		c.Restart(t, victim)
		c.WaitMetaLeader(t, 30*time.Second)
		for _, st := range streams {
			c.WaitStreamCurrent(t, st, time.Minute)
		}
	}
	<-loadDone
	loadTime := time.Since(start)
	if t.Failed() {
		t.FailNow()
	}
	if err := s.ready(10 * time.Second); err != nil {
		t.Fatalf("serve after the faults: %v", err)
	}

	waitQuiet(t, cl, dbURL, l.workspaces, pick(2*time.Minute, 5*time.Minute))
	f := checkStream(t, cl, l.commands())
	// One engine throughout: a pull answer lost in flight when a node
	// dies is caught up at the gap it leaves (engine/gap.go), so order
	// holds strictly.
	misordered := checkOrder(t, cl, f, true)
	checkAuditCLI(t, c.URLs())
	checkRebuild(t, c.URLs(), dbURL, "")
	t.Logf("worst: %v without a stream leader, %v without an outcome", worstLeaderless, worstStall)
	report{Scenario: "cluster", Long: long(), Commands: len(l.commands()), Workspaces: workspaces,
		Seconds: loadTime.Seconds(), Faults: faults, FaultKind: "NATS node shutdown (meta leader, stream leader, any) on a 3-node R3 cluster",
		Resends: l.resends.Load(), StreamRecords: f.Records, Events: f.Events, Outcomes: f.Outcomes,
		Lost: f.Lost + int(l.lost.Load()), Duplicated: f.Duplicated, Misordered: misordered}.log(t)
}
