package webhook_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/internal/testenv"
	"github.com/turnstile-dev/turnstile/webhook"
)

// An event whose ack wait runs out while a serve is still trying it (its
// heartbeats did not reach the server) goes to another delivery; the first
// serve then stops trying it instead of posting it once the receiver is
// back, where it could arrive after a later event the other delivery went
// on to. Here the other delivery is the test's own fetch, which acks the
// event unsent: the receiver must never get it, and gets the next event.
func TestAnEventHandedOutAgainIsNotPostedByTheFirstServe(t *testing.T) {
	f := newFixture(t)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	rcv := newReceiver(t, modeStatus) // every attempt fails until the takeover
	f.dispatcher(t, nil)
	h, err := f.reg.Add(ctx, webhook.Spec{URL: rcv.URL})
	if err != nil {
		t.Fatal(err)
	}
	rcv.setSecret(h.Secret)
	f.send(t, fsm.Create, "first")
	evs := f.eventSeqs(t, 0)
	first := evs[len(evs)-1]
	testenv.Eventually(t, 30*time.Second, "the dispatcher to retry the first event", func() bool { return rcv.tries() >= 2 })

	// The serve's heartbeats come every AckWait/3 (10 s): an ack wait
	// shorter than that runs out between them, as it would if they were
	// lost. It is the test's own delivery's ack wait too: one the test
	// does not ack in time goes back to the serve, whose first attempt of
	// a new delivery posts at once, to a receiver answering 200 if the
	// test has set it so after its late ack. 300 ms was short for the
	// fetch-to-ack on a loaded host; 2 s is still well under 10.
	cons, err := f.core.JS.Consumer(ctx, f.names.EventStream(), webhook.Durable(h.ID))
	if err != nil {
		t.Fatal(err)
	}
	cfg := cons.CachedInfo().Config
	cfg.AckWait = 2 * time.Second
	if _, err := f.core.JS.UpdateConsumer(ctx, f.names.EventStream(), cfg); err != nil {
		t.Fatal(err)
	}
	var taken jetstream.Msg
	for taken == nil {
		batch, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for m := range batch.Messages() {
			taken = m
		}
		if ctx.Err() != nil {
			t.Fatal("the first event was never handed out again")
		}
	}
	md, err := taken.Metadata()
	if err != nil {
		t.Fatal(err)
	}
	if md.Sequence.Stream != first || md.NumDelivered < 2 {
		t.Fatalf("handed out stream seq %d (delivery %d), want %d again", md.Sequence.Stream, md.NumDelivered, first)
	}
	if err := taken.DoubleAck(ctx); err != nil {
		t.Fatal(err)
	}
	rcv.set(modeOK)
	f.send(t, fsm.Create, "second")
	evs = f.eventSeqs(t, first)
	second := evs[len(evs)-1]
	testenv.Eventually(t, 30*time.Second, "the second event to be delivered", func() bool {
		got := rcv.seqs()
		return len(got) > 0 && got[len(got)-1] == second
	})
	for _, seq := range rcv.seqs() {
		if seq == first {
			t.Fatalf("the receiver got the first event (seq %d) from the serve that no longer held it: %v", first, rcv.seqs())
		}
	}
}
