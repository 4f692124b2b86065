package projector_test

import (
	"context"
	"runtime/debug"
	"testing"
	"time"

	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/projector"
)

// TestLargeHistory projects 100,000 events over 1,000 workspaces while they
// are published, then checks the result against a rebuild. The stream is
// in memory: this test is about the projector, and file storage would only
// spend the CPU that -race already makes scarce.
func TestLargeHistory(t *testing.T) {
	if testing.Short() {
		t.Skip("100,000 events")
	}
	// Memory is plentiful and the race detector makes every collection
	// expensive: trade one for the other.
	defer debug.SetGCPercent(debug.SetGCPercent(400))
	e := newEnvOn(t, pg, events.StreamOptions{Memory: true})
	gs := splitGenerators(e.names, 1000, 2, 9)
	p := e.projector(t, nil)
	stop := run(t, p)
	start := time.Now()
	publishParallel(t, e.js, gs, 50_000)
	published := time.Since(start)
	e.waitCaughtUp(t, 5*time.Minute)
	projected := time.Since(start)
	stop()
	e.assertCounts(t, gs...)
	want := sum(gs...)

	rb := time.Now()
	stats := e.assertEqualsRebuild(t, p)
	if stats.Events != want.events || stats.Workspaces != want.workspaces {
		t.Fatalf("rebuild stats %+v, want %d events over %d workspaces", stats, want.events, want.workspaces)
	}
	t.Logf("%d events (%d messages): published in %v, projected by %v, rebuilt and compared in %v",
		want.events, stats.Messages, published.Round(time.Millisecond), projected.Round(time.Millisecond),
		time.Since(rb).Round(time.Millisecond))
	if _, err := projector.GetWorkspace(context.Background(), e.pool, "ws-0000"); err != nil {
		t.Fatal(err)
	}
}
