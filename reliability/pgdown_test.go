package reliability_test

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/turnstile-dev/turnstile/internal/testenv"
)

// metric reads one unlabelled-by-us gauge from serve's /metrics.
func (s *serve) metric(name string) (float64, error) {
	hc := &http.Client{Timeout: 2 * time.Second}
	resp, err := s.apiGet(hc, "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+" ") && !strings.HasPrefix(line, name+"{") {
			continue
		}
		f := strings.Fields(line)
		return strconv.ParseFloat(f[len(f)-1], 64)
	}
	return 0, fmt.Errorf("metric %s not found", name)
}

// TestPostgresDown stops the read model's PostgreSQL while commands flow:
// commands keep getting outcomes (SQL is not on the command path), and once
// PostgreSQL is back the projector catches up with the stream and its lag
// returns to zero.
func TestPostgresDown(t *testing.T) {
	gate(t)
	outage := pick(5*time.Second, 30*time.Second)
	workspaces := pick(50, 500)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d: PostgreSQL down for %v", seed, outage)

	pg := testenv.StartPostgres(t)
	dbURL := pg.NewDatabase(t)
	s := startServe(t, serveOptions{databaseURL: dbURL})
	natsURL := fmt.Sprintf("nats://127.0.0.1:%d", s.natsPort)
	cl := newClient(t, connect(t, natsURL, "reliability-load"))

	ctx, cancel := context.WithTimeout(context.Background(), pick(3*time.Minute, 10*time.Minute))
	defer cancel()
	l := startOutageLoad(ctx, t, cl, workspaces, seed)
	pg.Stop(t)
	before := l.done.Load()
	time.Sleep(outage) // the fault's duration: PostgreSQL stays down this long
	during := l.done.Load() - before
	pg.Start(t)
	restarted := time.Now()
	if during < 10 {
		t.Errorf("only %d commands got an outcome while PostgreSQL was down for %v", during, outage)
	}

	// The projector catches up with where the stream was when PostgreSQL
	// came back, and its lag returns to zero, while the load goes on.
	target, err := cl.Store().LastSeq(ctx)
	if err != nil {
		t.Fatal(err)
	}
	poll(t, time.Minute, 50*time.Millisecond, "the read model to catch up", func() bool {
		cp, err := checkpoint(ctx, dbURL)
		return err == nil && cp >= target
	})
	catchUp := time.Since(restarted)
	poll(t, time.Minute, 50*time.Millisecond, "200 more outcomes after the outage", func() bool { return l.done.Load() >= before+during+200 })
	loadTime := l.finish()
	if t.Failed() {
		t.FailNow()
	}
	waitQuiet(t, cl, dbURL, l.workspaces, 2*time.Minute)
	poll(t, 30*time.Second, 100*time.Millisecond, "projector lag to return to 0", func() bool {
		m, err := s.metric("turnstile_projector_lag_messages")
		return err == nil && m == 0
	})
	t.Logf("%d outcomes during the %v outage; read model caught up %v after PostgreSQL came back", during, outage, catchUp)
	f := checkStream(t, cl, l.commands())
	checkAuditCLI(t, natsURL)
	checkRebuild(t, natsURL, dbURL, s.dataDir())
	report{Scenario: "postgres-down", Long: long(), Commands: len(l.commands()), Workspaces: workspaces,
		Seconds: loadTime.Seconds(), Faults: 1, FaultKind: fmt.Sprintf("PostgreSQL stopped for %v", outage),
		Resends: l.resends.Load(), DuringOutage: during, StreamRecords: f.Records, Events: f.Events,
		Outcomes: f.Outcomes, Lost: f.Lost + int(l.lost.Load()), Duplicated: f.Duplicated}.log(t)
}
