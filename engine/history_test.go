package engine_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/internal/testenv"
)

// History reads a workspace's events by direct batch gets, a page at a time:
// a history longer than a page, interleaved in the stream with
// another workspace's, comes back whole, in order, and only its own.
func TestHistoryPages(t *testing.T) {
	core := testenv.StartCore(t, testenv.CoreOptions{})
	cl := core.Client(t, "pages")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const configures = 530 // more than one page of 512
	var last string
	for _, id := range []string{"long", "other"} {
		if _, err := cl.Send(ctx, fsm.Command{Type: fsm.Create, Workspace: id}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range configures {
		ids := []string{"long"}
		if i%10 == 0 {
			ids = append(ids, "other") // interleaved in the stream
		}
		for _, id := range ids {
			c, err := cl.Publish(ctx, fsm.Command{Type: fsm.Configure, Workspace: id,
				Spec: &fsm.Spec{Env: map[string]string{"N": fmt.Sprint(i)}}})
			if err != nil {
				t.Fatal(err)
			}
			last = c.ID
		}
	}
	if _, err := cl.Outcome(ctx, last); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, time.Minute, "every command handled", func() bool { return consumerDone(core) })

	var got []events.Envelope
	if err := core.Store.History(ctx, "long", func(e events.Envelope) error {
		got = append(got, e)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(got) != configures+1 {
		t.Fatalf("%d events, want %d", len(got), configures+1)
	}
	for i, e := range got {
		if e.Workspace != "long" || e.Seq != uint64(i+1) || (i > 0 && e.StreamSeq <= got[i-1].StreamSeq) {
			t.Fatalf("event %d: workspace %s, seq %d, stream seq %d (previous %d)", i, e.Workspace, e.Seq, e.StreamSeq, got[max(i-1, 0)].StreamSeq)
		}
	}
	h, err := core.Store.Load(ctx, "long")
	if err != nil || got[len(got)-1].StreamSeq != h.StreamSeq {
		t.Fatalf("the last event read is at %d, the head at %+v (%v)", got[len(got)-1].StreamSeq, h.StreamSeq, err)
	}

	n := 0
	if err := core.Store.History(ctx, "never-created", func(events.Envelope) error { n++; return nil }); err != nil || n != 0 {
		t.Fatalf("history of a workspace without events: %d events, %v", n, err)
	}
	done, stop := context.WithCancel(ctx)
	stop()
	if err := core.Store.History(done, "long", func(events.Envelope) error { return nil }); err == nil {
		t.Fatal("history with a cancelled context did not fail")
	}
}
