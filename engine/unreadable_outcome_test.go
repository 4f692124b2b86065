package engine_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/turnstile-dev/turnstile/engine"
	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/internal/testenv"
)

// Commands whose refusal quotes a huge input (a 65,000-character key of
// '<', which JSON writes six bytes each; a 60,000-character Nats-Msg-Id)
// get a refusal every reader can decode, and the same id sent again as a
// valid command gets that refusal.
func TestRefusalOfHugeInputIsReadable(t *testing.T) {
	core := testenv.StartCore(t, testenv.CoreOptions{})
	names := events.NewNames("")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	body := `{"id":"huge-key","type":"stop","workspace":"huge","` + strings.Repeat("<", 65000) + `":1}`
	if len(body) > events.MaxCommandBytes {
		t.Fatalf("body is %d bytes", len(body))
	}
	if _, err := core.JS.Publish(ctx, names.Command("huge"), []byte(body)); err != nil {
		t.Fatal(err)
	}
	m := nats.NewMsg(names.Command("huge"))
	m.Data = []byte(`{"id":"huge-header","type":"stop","workspace":"huge"}`)
	m.Header.Set(jetstream.MsgIDHeader, strings.Repeat("<", 60_000))
	ack, err := core.JS.PublishMsg(ctx, m)
	if err != nil {
		t.Fatal(err)
	}
	headerID := fmt.Sprintf("invalid-%d", ack.Sequence)
	for id, says := range map[string]string{"huge-key": "unknown field", headerID: "Nats-Msg-Id header"} {
		var o events.OutcomeRecord
		testenv.Eventually(t, 20*time.Second, "the refusal of "+id, func() bool {
			var ok bool
			o, ok, err = core.Store.Outcome(ctx, id)
			if err != nil {
				t.Fatalf("outcome of %s: %v", id, err)
			}
			return ok
		})
		if !isRejection(o, fsm.CodeInvalid) || !strings.Contains(o.Rejection.Message, says) ||
			!strings.Contains(o.Rejection.Message, "bytes in all") || len(o.Rejection.Message) > 2<<10 {
			t.Errorf("refusal of %s: %.300q", id, o.Rejection.Message)
		}
	}
	// The id again, valid this time: the stored refusal is its outcome.
	cl := core.Client(t, "t")
	o := send(t, cl, fsm.Command{ID: "huge-key", Type: fsm.Stop, Workspace: "huge"})
	if !isRejection(o, fsm.CodeInvalid) {
		t.Fatalf("valid command under a refused id: %+v", o)
	}
	testenv.Eventually(t, 20*time.Second, "every command handled", func() bool { return consumerDone(core) })
	checkLog(t, core) // no unreadable message: the engine never writes one
}

// A command whose id holds a stored outcome no one can decode (written by
// an older build, or forged) is acked undecided and counted, not retried
// for ever: its workspace's next commands are decided.
func TestUnreadableStoredOutcomeDoesNotStall(t *testing.T) {
	metrics := engine.NewMetrics(nil)
	core := testenv.StartCore(t, testenv.CoreOptions{Engine: engine.Config{Metrics: metrics}})
	names := events.NewNames("")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	forged := []byte(`{"outcome":"rejected","pad":"` + strings.Repeat("x", events.MaxEnvelopeBytes) + `"}`)
	for _, id := range []string{"unreadable-1", "unreadable-2"} {
		if _, err := core.JS.Publish(ctx, names.Outcome(id), forged); err != nil {
			t.Fatal(err)
		}
	}
	// One without a Nats-Msg-Id (looked up before it is decided), one
	// with (found when its write is refused).
	if _, err := core.JS.Publish(ctx, names.Command("stall"), []byte(`{"id":"unreadable-1","type":"create","workspace":"stall"}`)); err != nil {
		t.Fatal(err)
	}
	b, err := events.EncodeCommand(fsm.Command{ID: "unreadable-2", Type: fsm.Create, Workspace: "stall"})
	if err != nil {
		t.Fatal(err)
	}
	m := nats.NewMsg(names.Command("stall"))
	m.Data = b
	m.Header.Set(jetstream.MsgIDHeader, "unreadable-2")
	if _, err := core.JS.PublishMsg(ctx, m); err != nil {
		t.Fatal(err)
	}
	cl := core.Client(t, "t")
	if o := send(t, cl, fsm.Command{Type: fsm.Create, Workspace: "stall"}); o.Outcome != fsm.Accepted || o.EventSeq != 1 {
		t.Fatalf("create after the unreadable ids: %+v", o)
	}
	testenv.Eventually(t, 20*time.Second, "every command handled", func() bool { return consumerDone(core) })
	if n := testutil.ToFloat64(metrics.UnreadableOutcomes); n != 2 {
		t.Errorf("%v commands counted with an unreadable outcome, want 2", n)
	}
	if n := streamMsgs(t, core, names.EventStream(), names.Events()); n != 1 {
		t.Errorf("%d events, want the create's one", n)
	}
}
