package reliability_test

import (
	"context"
	"math/rand/v2"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/turnstile-dev/turnstile/client"
)

// loadWithKills runs commands commands of l within timeout while s is
// kill -9'd and restarted each time the load passes one of kills points
// drawn from seed between 5% and 90% of commands: the one kill scheduler of
// TestCrash and TestTwoServes. It returns how long the load took, and
// stops the test if anything failed (a failed restart ends the load).
func loadWithKills(t *testing.T, s *serve, l *load, seed uint64, commands, kills int, timeout time.Duration) time.Duration {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	start := time.Now()
	killerDone := killDuring(ctx, cancel, t, s, l, seed, commands, kills)
	l.run(ctx, seed, func(i int64) bool { return i < int64(commands) })
	<-killerDone
	loadTime := time.Since(start)
	if t.Failed() {
		t.FailNow()
	}
	return loadTime
}

// killDuring is loadWithKills' killer; the channel closes when it is done.
func killDuring(ctx context.Context, cancel context.CancelFunc, t *testing.T, s *serve, l *load, seed uint64, commands, kills int) <-chan struct{} {
	r := rand.New(rand.NewPCG(seed, 0))
	var at []int64
	for range kills {
		at = append(at, int64(commands)*int64(5+r.IntN(86))/100)
	}
	slices.Sort(at)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for _, n := range at {
			for l.done.Load() < n {
				if ctx.Err() != nil {
					return
				}
				time.Sleep(5 * time.Millisecond) // poll interval of the load's progress
			}
			// Load shaping: a random few milliseconds more, so kills do not
			// line up with outcome boundaries.
			time.Sleep(time.Duration(r.IntN(50)) * time.Millisecond)
			s.kill9()
			if err := s.restart(); err != nil {
				t.Errorf("restart after kill %d: %v", s.kills, err)
				cancel()
				return
			}
		}
	}()
	return done
}

// outageLoad is the one setup of the outage tests (NATS down, PostgreSQL
// down): a paced load that runs in the background until stopped.
type outageLoad struct {
	*load
	stop  atomic.Bool
	ended chan struct{}
	start time.Time
}

// startOutageLoad starts a paced load over workspaces on cl and returns
// once it has its first 200 outcomes, before the fault. The load stops
// when ctx ends, at finish, or at the end of the test.
func startOutageLoad(ctx context.Context, t *testing.T, cl *client.Client, workspaces int, seed uint64) *outageLoad {
	t.Helper()
	l := newLoad(t, cl, workspaces, 8)
	l.pace = 20 * time.Millisecond
	o := &outageLoad{load: l, ended: make(chan struct{}), start: time.Now()}
	go func() {
		defer close(o.ended)
		l.run(ctx, seed, func(int64) bool { return !o.stop.Load() })
	}()
	t.Cleanup(func() { o.finish() })
	poll(t, time.Minute, 10*time.Millisecond, "200 outcomes before the outage", func() bool { return l.done.Load() >= 200 })
	return o
}

// finish stops the load, waits for its last commands, and returns how long
// it ran.
func (o *outageLoad) finish() time.Duration {
	o.stop.Store(true)
	<-o.ended
	return time.Since(o.start)
}
