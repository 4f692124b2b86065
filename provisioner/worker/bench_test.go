package worker_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	dockerevents "github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"

	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/provisioner"
)

// BenchmarkCreateToRunning measures, for benchConcurrency workspaces
// created at once on the real Docker engine, the time from client.Send of
// create to the event that makes the workspace running (the whole path:
// command stream, engine, event stream, worker, Docker, provision_succeeded,
// engine again), beside bare Docker doing the same work in the same run:
// ContainerCreate and ContainerStart of the same image, ready when it runs
// and its health check says healthy, which is the backend's readiness. Each
// iteration runs both, alternating which goes first.
//
//	go test -run '^$' -bench CreateToRunning -benchtime 3x ./provisioner/worker/
func BenchmarkCreateToRunning(b *testing.B) {
	d := newDocker(b)
	r := newRig(b, d.prov, rigOptions{})
	obs := observeRunning(b, r)

	// Warm up both paths (first use of the image, first consumer fetches).
	warm := []string{randomID("warm")}
	r.createAll(b, obs, warm)
	r.deleteAll(b, warm)
	d.bareRunAll(b, 1)

	var ts, bare []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		ids := make([]string, benchConcurrency)
		for k := range ids {
			ids[k] = fmt.Sprintf("bench-%d-%s", i, randomID("w"))
		}
		turnstile := func() {
			ts = append(ts, r.createAll(b, obs, ids)...)
			b.StopTimer() // each phase starts on an engine without the other's containers
			r.deleteAll(b, ids)
			b.StartTimer()
		}
		docker := func() { bare = append(bare, d.bareRunAll(b, benchConcurrency)...) }
		if i%2 == 0 {
			turnstile()
			docker()
		} else {
			docker()
			turnstile()
		}
	}
	b.StopTimer()
	tp50, tp95 := percentile(ts, 50), percentile(ts, 95)
	dp50, dp95 := percentile(bare, 50), percentile(bare, 95)
	b.ReportMetric(ms(tp50), "turnstile_p50_ms")
	b.ReportMetric(ms(tp95), "turnstile_p95_ms")
	b.ReportMetric(ms(dp50), "docker_p50_ms")
	b.ReportMetric(ms(dp95), "docker_p95_ms")
	b.ReportMetric(float64(tp50)/float64(dp50), "overhead_ratio")
	b.Logf("%d workspaces at once, %d samples each: turnstile p50 %v p95 %v; docker p50 %v p95 %v",
		benchConcurrency, len(ts), tp50, tp95, dp50, dp95)
}

const benchConcurrency = 20

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// percentile is the nearest-rank p-th percentile of ds.
func percentile(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	k := (p*len(s) + 99) / 100 // ceil(p/100 * n)
	return s[max(k, 1)-1]
}

// runningObserver follows the event stream and tells waiters when a
// workspace's event makes it running.
type runningObserver struct {
	mu      sync.Mutex
	waiting map[string]chan time.Time
}

func observeRunning(tb testing.TB, r *rig) *runningObserver {
	tb.Helper()
	o := &runningObserver{waiting: map[string]chan time.Time{}}
	from, err := r.core.Store.LastSeq(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = r.core.Store.Subscribe(ctx, from+1, func(rec events.Record) error {
			if rec.Event == nil || rec.Event.State.Status != fsm.Running {
				return nil
			}
			at := time.Now()
			o.mu.Lock()
			ch := o.waiting[rec.Event.Workspace]
			delete(o.waiting, rec.Event.Workspace)
			o.mu.Unlock()
			if ch != nil {
				ch <- at
			}
			return nil
		})
	}()
	tb.Cleanup(func() { cancel(); <-done })
	return o
}

// expect registers interest in ws becoming running.
func (o *runningObserver) expect(ws string) <-chan time.Time {
	ch := make(chan time.Time, 1)
	o.mu.Lock()
	o.waiting[ws] = ch
	o.mu.Unlock()
	return ch
}

// createAll creates ids at once and returns each one's create-to-running
// latency.
func (r *rig) createAll(tb testing.TB, obs *runningObserver, ids []string) []time.Duration {
	tb.Helper()
	out := make([]time.Duration, len(ids))
	errs := make([]error, len(ids))
	start := make(chan struct{})
	var wg sync.WaitGroup
	for k, id := range ids {
		running := obs.expect(id)
		wg.Go(func() {
			<-start
			began := time.Now()
			o, err := r.trySend(fsm.Command{Type: fsm.Create, Workspace: id})
			if err == nil && o.Outcome != fsm.Accepted {
				err = fmt.Errorf("create %s: %+v", id, o)
			}
			if err != nil {
				errs[k] = err
				return
			}
			select {
			case at := <-running:
				out[k] = at.Sub(began)
			case <-time.After(2 * time.Minute):
				errs[k] = fmt.Errorf("%s not running after 2 minutes", id)
			}
		})
	}
	close(start)
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			tb.Fatal(err)
		}
	}
	return out
}

// deleteAll deletes ids and waits until they are gone.
func (r *rig) deleteAll(tb testing.TB, ids []string) {
	tb.Helper()
	for _, id := range ids {
		r.send(tb, fsm.Command{Type: fsm.Delete, Workspace: id})
	}
	for _, id := range ids {
		r.wait(tb, id, fsm.Deleted, 0, 2*time.Minute)
	}
}

// bareRunAll creates and starts n containers of the agent image at once,
// straight through the Docker API, and returns the time each took from
// ContainerCreate until it runs and is healthy (learnt from the engine's
// health_status event, so the baseline carries no polling delay). The
// containers carry the installation's label and are removed before it
// returns (timer stopped).
func (d *dockerEnv) bareRunAll(tb testing.TB, n int) []time.Duration {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	names := make([]string, n)
	healthy := map[string]chan time.Time{}
	for k := range names {
		names[k] = "bare-" + randomID("c")
		healthy[names[k]] = make(chan time.Time, 1)
	}
	evCtx, stopEvents := context.WithCancel(ctx)
	defer stopEvents()
	// Since a moment ago: the stream may be set up after the first
	// containers turn healthy; those events are replayed then.
	msgs, evErrs := d.cli.Events(evCtx, dockerevents.ListOptions{Since: fmt.Sprint(time.Now().Add(-time.Second).Unix()), Filters: filters.NewArgs(
		filters.Arg("type", string(dockerevents.ContainerEventType)),
		filters.Arg("event", "health_status"),
		filters.Arg("label", provisioner.LabelInstallation+"="+d.installation),
	)})
	evDone := make(chan struct{})
	go func() {
		defer close(evDone)
		for {
			select {
			case m := <-msgs:
				if m.Action == dockerevents.ActionHealthStatusHealthy {
					at := time.Now()
					if ch := healthy[m.Actor.Attributes["name"]]; ch != nil {
						select {
						case ch <- at:
						default:
						}
					}
				}
			case <-evErrs:
				return
			case <-evCtx.Done():
				return
			}
		}
	}()
	defer func() { stopEvents(); <-evDone }()

	out := make([]time.Duration, n)
	errs := make([]error, n)
	ids := make([]string, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for k, name := range names {
		wg.Go(func() {
			<-start
			began := time.Now()
			resp, err := d.cli.ContainerCreate(ctx, &container.Config{Image: d.image,
				Labels: map[string]string{provisioner.LabelInstallation: d.installation}}, nil, nil, nil, name)
			if err != nil {
				errs[k] = err
				return
			}
			ids[k] = resp.ID
			if err := d.cli.ContainerStart(ctx, resp.ID, container.StartOptions{}); err != nil {
				errs[k] = err
				return
			}
			select {
			case at := <-healthy[name]:
				out[k] = at.Sub(began)
			case <-ctx.Done():
				errs[k] = fmt.Errorf("%s not healthy: %w", name, ctx.Err())
			}
		})
	}
	close(start)
	wg.Wait()
	if b, ok := tb.(*testing.B); ok {
		b.StopTimer()
		defer b.StartTimer()
	}
	for _, id := range ids {
		if id != "" {
			if err := d.cli.ContainerRemove(context.Background(), id, container.RemoveOptions{Force: true}); err != nil {
				tb.Errorf("remove %s: %v", id, err)
			}
		}
	}
	for _, err := range errs {
		if err != nil {
			tb.Fatal(err)
		}
	}
	return out
}
