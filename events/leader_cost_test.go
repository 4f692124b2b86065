package events_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/fsm"
)

// TestOneReplicaAsksNoLeader: on a single-replica stream the outcome
// check, the single path and FindEvent ask no more than before the
// leader's confirmations came in (TestLaggingReplica): no message get,
// and no stream info for a commit (the configuration read at open
// stands for replicasRecheck).
func TestOneReplicaAsksNoLeader(t *testing.T) {
	store, js := commitEnv(t)
	nc, names := js.Conn(), store.Names()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// The server delivers each API request to this subscriber too.
	var gets, infos atomic.Int64
	for subject, count := range map[string]*atomic.Int64{
		"$JS.API.STREAM.MSG.GET." + names.EventStream(): &gets,
		"$JS.API.STREAM.INFO." + names.EventStream():    &infos,
	} {
		sub, err := nc.Subscribe(subject, func(*nats.Msg) { count.Add(1) })
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = sub.Unsubscribe() }()
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	commit := func(ws []events.Write) []events.Written {
		t.Helper()
		res, _ := store.Commit(ctx, ws, events.CommitOptions{})
		return res
	}
	before := time.Now().Add(-time.Minute)
	// Fresh commands alone and in a batch (one batch get), a command sent
	// again (the single path), a conflict.
	first := decided(t, events.Head{}, fsm.Command{ID: "one-create", Type: fsm.Create, Workspace: "one"})
	if r := commit([]events.Write{first}); r[0].Err != nil {
		t.Fatalf("create: %+v", r[0])
	}
	var batch []events.Write
	for i := range 20 {
		ws := fmt.Sprint("many-", i)
		batch = append(batch, decided(t, events.Head{}, fsm.Command{ID: ws + "-create", Type: fsm.Create, Workspace: ws}))
	}
	for i, r := range commit(batch) {
		if r.Err != nil || r.EventSeq == 0 {
			t.Fatalf("batch write %d: %+v", i, r)
		}
	}
	if r := commit([]events.Write{first}); r[0].Existing == nil {
		t.Fatalf("create sent again: %+v; want its outcome back", r[0])
	}
	stale := decided(t, events.Head{}, fsm.Command{ID: "one-configure", Type: fsm.Create, Workspace: "one"})
	if r := commit([]events.Write{stale}); r[0].Err == nil {
		t.Fatalf("a create on a stale head: %+v; want a conflict", r[0])
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if g, i := gets.Load(), infos.Load(); g != 0 || i != 0 {
		t.Errorf("commits asked %d message gets and %d stream infos; want none", g, i)
	}
	// FindEvent: found, not there behind an event, nothing since.
	for _, c := range []struct {
		id    string
		since time.Time
		want  bool
	}{{"one-create", before, true}, {"one-none", before, false}, {"one-create", time.Now().Add(time.Minute), false}} {
		if _, ok, err := store.FindEvent(ctx, "one", c.id, c.since); err != nil || ok != c.want {
			t.Errorf("FindEvent of %s since %v: %v, %v; want %v", c.id, c.since, ok, err, c.want)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if g := gets.Load(); g != 0 {
		t.Errorf("FindEvent asked %d message gets; want none", g)
	}
}
