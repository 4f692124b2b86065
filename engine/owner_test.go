package engine_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/turnstile-dev/turnstile/engine"
	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/internal/testenv"
)

// Every engine computes the same spread from the same members: each gets
// at most ceil(P/N), every partition has an owner, and an engine joining
// moves only the partitions it takes.
func TestAssign(t *testing.T) {
	ids := []string{"a", "b", "c"}
	for _, parts := range []int{1, 7, 16, 64} {
		for n := 1; n <= len(ids); n++ {
			got := engine.Assign(parts, ids[:n])
			if len(got) != parts {
				t.Fatalf("P=%d N=%d: %d partitions assigned", parts, n, len(got))
			}
			load := map[string]int{}
			for _, id := range got {
				load[id]++
			}
			for id, l := range load {
				if l > (parts+n-1)/n {
					t.Errorf("P=%d N=%d: %s has %d partitions", parts, n, id, l)
				}
			}
			if again := engine.Assign(parts, slices.Clone(ids[:n])); fmt.Sprint(again) != fmt.Sprint(got) {
				t.Errorf("P=%d N=%d: not deterministic", parts, n)
			}
			if n > 1 {
				before := engine.Assign(parts, ids[:n-1])
				moved := 0
				for k, id := range got {
					if before[k] != id && id != ids[n-1] {
						moved++
					}
				}
				// Capacity can push a few partitions between the old
				// engines; most stay.
				if moved > parts/4+1 {
					t.Errorf("P=%d: %d partitions moved between old engines when %s joined", parts, moved, ids[n-1])
				}
			}
		}
	}
	if got := engine.Assign(16, nil); len(got) != 0 {
		t.Errorf("no engines: %v", got)
	}
}

// The server stores a command under the partition events.Partition
// computes, which is the one its engine consumer reads.
func TestPartitionMatchesTheServer(t *testing.T) {
	metrics := engine.NewMetrics(prometheus.NewRegistry())
	core := testenv.StartCore(t, testenv.CoreOptions{Engine: engine.Config{Metrics: metrics}})
	// A lone engine pulls every partition from the start.
	if n, k := testutil.ToFloat64(metrics.Partitions), testutil.ToFloat64(metrics.Takeovers); n != events.DefaultPartitions || k != events.DefaultPartitions {
		t.Fatalf("pulls %v partitions after %v takeovers, want %d and %d", n, k, events.DefaultPartitions, events.DefaultPartitions)
	}
	names := events.NewNames("")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl := core.Client(t, "t")
	for i := range 40 {
		ws := fmt.Sprintf("part-%d", i)
		if o := send(t, cl, fsm.Command{Type: fsm.Create, Workspace: ws}); o.Outcome != fsm.Accepted {
			t.Fatalf("create %s: %+v", ws, o)
		}
		c := partConsumer(t, core.JS, ws)
		want := names.CommandsIn(events.Partition(ws, events.DefaultPartitions))
		if c.CachedInfo().Config.FilterSubject != want {
			t.Fatalf("%s: consumer filter %s, want %s", ws, c.CachedInfo().Config.FilterSubject, want)
		}
		if n := streamMsgs(t, core, names.CommandStream(), names.Prefix+".cmd."+fmt.Sprint(events.Partition(ws, events.DefaultPartitions))+"."+ws); n != 1 {
			t.Fatalf("%s: %d commands stored under its partition, want 1", ws, n)
		}
	}
	// A subject that names a partition is taken by no stream.
	if _, err := core.JS.Publish(ctx, names.Prefix+".cmd.3.forged", []byte(`{}`)); err == nil {
		t.Fatal("a command published with a partition of its own was stored")
	}
}

// Two engines split the partitions; when one closes the other takes them
// all, and a third joining takes a share; commands are decided throughout.
func TestPartitionsFollowTheEngines(t *testing.T) {
	cfg := engine.Config{MemberTTL: time.Second, PinnedTTL: 2 * time.Second}
	core := testenv.StartCore(t, testenv.CoreOptions{Engines: 2, Engine: cfg})
	cl := core.Client(t, "t")
	all := make([]int, events.DefaultPartitions)
	for k := range all {
		all[k] = k
	}
	split := func(engines ...*engine.Engine) func() bool {
		return func() bool {
			var got []int
			for _, e := range engines {
				p := e.Partitions()
				if len(p) == 0 || len(p) > (len(all)+len(engines)-1)/len(engines) {
					return false
				}
				got = append(got, p...)
			}
			slices.Sort(got)
			return slices.Equal(got, all)
		}
	}
	testenv.Eventually(t, 20*time.Second, "the two engines splitting the partitions", split(core.Engines[0], core.Engines[1]))
	sendAll := func(round int) {
		for i := range 32 {
			ws := fmt.Sprintf("follow-%d-%d", round, i)
			if o := send(t, cl, fsm.Command{Type: fsm.Create, Workspace: ws}); o.Outcome != fsm.Accepted {
				t.Fatalf("round %d, %s: %+v", round, ws, o)
			}
		}
	}
	sendAll(0)
	if err := core.Engines[1].Close(); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 20*time.Second, "the survivor taking every partition", split(core.Engines[0]))
	sendAll(1)
	third := core.StartEngine(t)
	testenv.Eventually(t, 20*time.Second, "a new engine taking its share", split(core.Engines[0], third))
	sendAll(2)
	states, _ := checkLog(t, core)
	if len(states) != 3*32 {
		t.Errorf("%d workspaces in the log, want %d", len(states), 3*32)
	}
}
