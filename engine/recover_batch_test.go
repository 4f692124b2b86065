package engine_test

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/turnstile-dev/turnstile/engine"
	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/internal/testenv"
)

// heldRange has one command of a partition held up (never recorded) and
// then n commands after it decided and acked, and returns the consumer's
// ack floor: a takeover reads the n commands again, and looks up their
// outcomes, to find the held one unfinished.
func heldRange(t *testing.T, ctx context.Context, core *testenv.Core, log *logged, n int) uint64 {
	t.Helper()
	stuck := stuckCommand(t, ctx, core.JS, "held")
	testenv.Eventually(t, 30*time.Second, "the held command in hand", func() bool {
		for _, r := range log.find("engine: command not recorded yet; retrying") {
			if r.attrs["command"].String() == stuck {
				return true
			}
		}
		return false
	})
	var acks []jetstream.PubAckFuture
	for i := range n {
		cmd := fsm.Command{ID: fmt.Sprintf("after-%d-create", i), Type: fsm.Create, Workspace: fmt.Sprintf("after-%d", i)}
		f, err := core.JS.PublishMsgAsync(commandMsg(t, cmd))
		if err != nil {
			t.Fatal(err)
		}
		acks = append(acks, f)
	}
	testenv.AwaitAcks(t, ctx, acks)
	testenv.Eventually(t, time.Minute, "every command after the held one acked", func() bool {
		info := consumerInfo(t, core.JS, "held")
		return info.NumPending == 0 && info.NumAckPending == 1
	})
	return consumerInfo(t, core.JS, "held").AckFloor.Stream
}

// takenReads are the logged reads of the commands taken from floor on.
func takenReads(log *logged, floor uint64) []loggedRecord {
	var read []loggedRecord
	for _, r := range log.find("engine: read the commands taken before this start") {
		if r.attrs["stream"].String() == events.NewNames("").CommandStream() && fmt.Sprint(r.attrs["from"]) == fmt.Sprint(floor+1) {
			read = append(read, r)
		}
	}
	return read
}

// A takeover looks up the outcomes of the commands it reads again a page
// at a time: 1,000 commands taken and finished behind a held one cost a
// few direct batch gets, not one direct get each. It still finds the held
// one, and only it, unfinished.
//
// On the old code, one direct get per command: 1,000 requests.
func TestTakeoverLooksUpOutcomesByThePage(t *testing.T) {
	const acked = 1000
	log := newLogged(testenv.Logger(t).Handler())
	cfg := engine.Config{MemberTTL: time.Second, AckWait: 5 * time.Second, Logger: slog.New(log)}
	core := testenv.StartCore(t, testenv.CoreOptions{Engine: cfg, Partitions: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	floor := heldRange(t, ctx, core, log, acked)

	// The direct gets naming an outcome of the commands after the held one
	// (in their subject, or in a batch get's body).
	nc, _ := core.Connect(t)
	gets := testenv.DirectGets(t, nc, core.Store.Names().Outcome("after-"))
	second := core.StartEngine(t)
	if err := core.Engines[0].Close(); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, "the second engine's read of the range", func() bool {
		return slices.Equal(second.Partitions(), []int{0}) && len(takenReads(log, floor)) > 0
	})
	n := gets()
	for _, r := range takenReads(log, floor) {
		t.Logf("read from %v to %v: %v commands, %v unfinished, took %v", r.attrs["from"], r.attrs["to"],
			r.attrs["commands"], r.attrs["unfinished"], r.attrs["took"])
		if c := r.attrs["commands"].Int64(); c < acked {
			t.Errorf("the takeover read %d commands, want at least %d", c, acked)
		}
		if u := r.attrs["unfinished"].Int64(); u != 1 {
			t.Errorf("the takeover read %d commands as unfinished; only the held one is", u)
		}
	}
	t.Logf("%d direct get requests for the outcomes of %d commands", n, acked)
	if n > 10 {
		t.Errorf("%d direct get requests for the outcomes of %d commands, want at most 10", n, acked)
	}
	cl := core.Client(t, "t")
	if o := send(t, cl, fsm.Command{Type: fsm.Create, Workspace: "fresh"}); o.Outcome != fsm.Accepted {
		t.Fatalf("create fresh: %+v", o)
	}
}

// A command a dead engine took whose id holds an outcome no one can decode
// is acked undecided after a takeover, and counted and logged once, with
// nothing stored for it. The takeover's lookup (presence only) finds an
// outcome there and leaves the command to its redelivery after the ack
// wait, which drops it.
//
// On the old code the lookup decoded the outcome, read the command as
// unfinished and had it handled at once: dropped, counted and logged, but
// its ack went to the reader of the range (which takes no acks), so the
// redelivery came all the same and was dropped and counted a second time.
func TestTakenCommandWithUnreadableOutcomeIsDroppedAfterTakeover(t *testing.T) {
	const ackWait = 3 * time.Second
	metrics := engine.NewMetrics(nil)
	log := newLogged(testenv.Logger(t).Handler())
	cfg := engine.Config{AckWait: ackWait, Logger: slog.New(log), Metrics: metrics}
	core := testenv.StartCore(t, testenv.CoreOptions{Engine: cfg, Partitions: 1})
	if err := core.Engines[0].Close(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	names := events.NewNames("")
	cmd := fsm.Command{ID: "forged-create", Type: fsm.Create, Workspace: "forged"}
	publishCommand(t, ctx, core.JS, cmd)
	deadTake(t, core, cmd.Workspace, cmd.ID)
	if _, err := core.JS.Publish(ctx, names.Outcome(cmd.ID), []byte(`{"outcome":"not one"}`)); err != nil {
		t.Fatal(err)
	}
	floor := consumerInfo(t, core.JS, cmd.Workspace).AckFloor.Stream
	taken := time.Now()
	core.StartEngine(t)
	testenv.Eventually(t, 10*ackWait, "the command acked", func() bool {
		info := consumerInfo(t, core.JS, cmd.Workspace)
		return info.NumPending == 0 && info.NumAckPending == 0
	})
	for _, r := range takenReads(log, floor) {
		t.Logf("read from %v to %v: %v commands, %v unfinished; acked %v after the takeover began",
			r.attrs["from"], r.attrs["to"], r.attrs["commands"], r.attrs["unfinished"], time.Since(taken).Round(time.Millisecond))
	}
	if n := testutil.ToFloat64(metrics.UnreadableOutcomes); n != 1 {
		t.Errorf("%v commands counted with an unreadable outcome, want 1", n)
	}
	if n := streamMsgs(t, core, names.EventStream(), names.Event(cmd.Workspace)); n != 0 {
		t.Errorf("%d events of the workspace, want none", n)
	}
}
