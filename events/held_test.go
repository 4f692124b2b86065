package events_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/internal/testenv"
)

// OutcomesHeld says which command ids have a stored outcome, in order,
// an unreadable one included: up to 16 ids with a direct get each, more
// with one batch get per 1,024 ids.
func TestOutcomesHeld(t *testing.T) {
	n := testenv.StartNATS(t, testenv.NATSOptions{})
	_, js := n.Connect(t)
	watch, _ := n.Connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	names := events.NewNames("")
	if err := events.EnsureStreams(ctx, js, names, events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	store, err := events.OpenStore(ctx, js, names, events.Codec{})
	if err != nil {
		t.Fatal(err)
	}
	// Ids 0..2499: every third has an outcome, 7 one no one can decode.
	const total = 2500
	ids := make([]string, total)
	want := make([]bool, total)
	var acks []jetstream.PubAckFuture
	for i := range ids {
		ids[i] = fmt.Sprintf("held-%d", i)
		if i%3 != 0 && i != 7 {
			continue
		}
		want[i] = true
		m := nats.NewMsg(names.Outcome(ids[i]))
		m.Data = []byte(`{"outcome":"not one"}`)
		if i != 7 {
			if m, err = store.OutcomeMsgForTest(events.OutcomeRecord{CommandID: ids[i], Workspace: "held",
				CommandType: fsm.Create, Outcome: fsm.Noop, Reason: "test"}); err != nil {
				t.Fatal(err)
			}
		}
		f, err := js.PublishMsgAsync(m)
		if err != nil {
			t.Fatal(err)
		}
		acks = append(acks, f)
	}
	testenv.AwaitAcks(t, ctx, acks)
	// Outcomes are on the event stream: every direct get OutcomesHeld makes,
	// by subject or in a batch, is one on it.
	gets := testenv.DirectGets(t, watch, "DIRECT.GET."+names.EventStream())
	for _, c := range []struct {
		from, to int // ids[from:to]
		requests int
	}{
		{0, 0, 0},
		{6, 7, 1},         // present
		{7, 8, 1},         // unreadable: present all the same
		{1, 2, 1},         // absent
		{0, 16, 16},       // a direct get each
		{0, 17, 1},        // one batch
		{100, 1124, 1},    // one full batch
		{100, 1125, 2},    // two
		{0, total, 3},     // three
		{1, total - 1, 3}, // ending on an absent id
	} {
		t.Run(fmt.Sprintf("%d-%d", c.from, c.to), func(t *testing.T) {
			before := gets()
			got, err := store.OutcomesHeld(ctx, ids[c.from:c.to])
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != c.to-c.from {
				t.Fatalf("%d answers for %d ids", len(got), c.to-c.from)
			}
			for i, held := range got {
				if held != want[c.from+i] {
					t.Errorf("%s: held %v, want %v", ids[c.from+i], held, want[c.from+i])
				}
			}
			if n := gets() - before; n != c.requests {
				t.Errorf("%d direct get requests, want %d", n, c.requests)
			}
		})
	}
	t.Run("ErrInvalid", func(t *testing.T) {
		if _, err := store.OutcomesHeld(ctx, []string{"held-0", "held.>"}); err == nil {
			t.Fatal("an invalid id looked up")
		}
	})
}
