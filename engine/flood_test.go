package engine_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/turnstile-dev/turnstile/engine"
	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/internal/testenv"
)

// issue 12 item 10: thousands of creates of one workspace used to take the
// consumer's whole MaxAckPending and be decided one by one while every
// other workspace's commands waited behind them. Now the flood beyond the
// per-workspace cap is refused busy at once, undecided (no event), and
// another workspace's command, published after the whole flood, is
// decided while the flood's queued commands are still being handled.
func TestFloodOfOneWorkspace(t *testing.T) {
	const flood, perWorkspace = 3000, 100
	// No engine yet: the whole flood is in the stream before it starts,
	// ahead of the other workspace's command.
	core := testenv.StartCore(t, testenv.CoreOptions{Engines: -1,
		Engine: engine.Config{MaxAckPending: 1000, MaxPendingPerWorkspace: perWorkspace}})
	names := events.NewNames("")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var acks []jetstream.PubAckFuture
	publish := func(cmd fsm.Command) {
		t.Helper()
		b, err := events.EncodeCommand(cmd)
		if err != nil {
			t.Fatal(err)
		}
		m := nats.NewMsg(names.Command(cmd.Workspace))
		m.Data = b
		m.Header.Set(jetstream.MsgIDHeader, cmd.ID)
		f, err := core.JS.PublishMsgAsync(m)
		if err != nil {
			t.Fatal(err)
		}
		acks = append(acks, f)
	}
	for i := range flood {
		publish(fsm.Command{ID: fmt.Sprintf("flood-%d", i), Type: fsm.Create, Workspace: "flood"})
	}
	publish(fsm.Command{ID: "other-create", Type: fsm.Create, Workspace: "other"})
	// Every command stored, or the counts below would not be the flood's.
	testenv.AwaitAcks(t, ctx, acks)
	started := time.Now()
	core.StartEngine(t)
	testenv.Eventually(t, 2*time.Minute, "the engine to handle the flood", func() bool { return consumerDone(core) })

	// Who was decided when: the outcomes in stream order.
	var otherSeq, lastDecidedFlood uint64
	var other events.OutcomeRecord
	count := map[string]int{}
	floodEvents := 0
	err := core.Store.Replay(ctx, 1, 0, func(r events.Record) error {
		switch {
		case r.Event != nil && r.Event.Workspace == "flood":
			floodEvents++
		case r.Outcome != nil && r.Outcome.Workspace == "other":
			otherSeq, other = r.StreamSeq, *r.Outcome
		case r.Outcome != nil:
			o := r.Outcome
			key := string(o.Outcome)
			if o.Rejection != nil {
				key += "/" + string(o.Rejection.Code)
				if o.Reason == "overflow" {
					key += "/overflow"
				}
			}
			count[key]++
			if key != "rejected/busy/overflow" {
				lastDecidedFlood = r.StreamSeq
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("other's create decided %v after the engine started, behind a flood of %d: %v",
		other.DecidedAt.Sub(started).Round(time.Millisecond), flood, count)
	if other.Outcome != fsm.Accepted {
		t.Fatalf("other's create: %+v", other)
	}
	if count["accepted"] != 1 || floodEvents != 1 {
		t.Fatalf("flood: %d accepted, %d events, want 1 and 1: %v", count["accepted"], floodEvents, count)
	}
	if count["accepted"]+count["rejected/exists"]+count["rejected/busy/overflow"] != flood {
		t.Fatalf("flood outcomes %v do not add up to %d", count, flood)
	}
	// Most of the flood never waited: only what the queue held was decided.
	if count["rejected/busy/overflow"] < flood/2 {
		t.Fatalf("only %d of %d refused busy at intake: %v", count["rejected/busy/overflow"], flood, count)
	}
	if otherSeq > lastDecidedFlood {
		t.Fatalf("other's command (outcome at %d) was decided only after the flood's queue was drained (last at %d)", otherSeq, lastDecidedFlood)
	}
	checkLog(t, core)
}
