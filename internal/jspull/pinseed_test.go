package jspull_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/turnstile-dev/turnstile/internal/jspull"
	"github.com/turnstile-dev/turnstile/internal/testenv"
)

// pinnedDurable makes consumer d of stream S in priority group g, pinned
// for a minute.
func pinnedDurable(t *testing.T, js jetstream.JetStream) jetstream.Consumer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cons, err := js.CreateConsumer(ctx, "S", jetstream.ConsumerConfig{Durable: "d", AckPolicy: jetstream.AckExplicitPolicy,
		PriorityPolicy: jetstream.PriorityPolicyPinned, PriorityGroups: []string{"g"}, PinnedTTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	return cons
}

// pinnedPull starts a pull of d in group g (with pin, "" for none).
func pinnedPull(t *testing.T, nc *nats.Conn, subject, pin string) *jspull.Iter {
	t.Helper()
	it, err := jspull.Messages(nc, subject, jspull.Options{Batch: 10, Expiry: 5 * time.Second, Group: "g", PinID: pin})
	if err != nil {
		t.Fatal(err)
	}
	return it
}

// firstPinned starts a pull of d in group g with no pin and takes its
// first delivery, which comes with the pin the consumer gave it.
func firstPinned(t *testing.T, nc *nats.Conn, subject string) (*jspull.Iter, jetstream.Msg) {
	t.Helper()
	it := pinnedPull(t, nc, subject, "")
	m, err := next(t, it)
	if err != nil {
		t.Fatal(err)
	}
	return it, m
}

// lastPin is the pin a delivery came with.
func lastPin(m jetstream.Msg) string {
	ids := m.Headers().Values("Nats-Pin-Id")
	if len(ids) == 0 {
		return ""
	}
	return ids[len(ids)-1]
}

// A pull stopped without an unpin leaves the consumer pinned to it for the
// PinnedTTL. A new pull that starts with that pin (Options.PinID) is
// served at once, under the same pin.
//
// On the old code a new pull started with no pin: the server held its
// requests back while the old pin lasted, a minute here.
func TestStartsWithAKnownPin(t *testing.T) {
	n := testenv.StartNATS(t, testenv.NATSOptions{})
	nc, js := n.Connect(t)
	publish(t, js, 1, true, nil)
	cons := pinnedDurable(t, js)
	subject := jspull.NextSubject(js, "S", "d")
	first, m := firstPinned(t, nc, subject)
	pin := lastPin(m)
	if pin == "" || first.PinID() != pin {
		t.Fatalf("the first pull's pin is %q, its delivery came with %q", first.PinID(), pin)
	}
	if err := m.Ack(); err != nil {
		t.Fatal(err)
	}
	first.Stop() // no unpin: the consumer stays pinned to pin
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	info, err := cons.Info(ctx)
	if err != nil || len(info.PriorityGroups) != 1 || info.PriorityGroups[0].PinnedClientID != pin {
		t.Fatalf("after the stop the consumer is pinned to %+v (%v), want %q", info.PriorityGroups, err, pin)
	}
	publish(t, js, 1, false, nil)

	second := pinnedPull(t, nc, subject, pin)
	got := reader(t, second)
	// Well under the PinnedTTL the old code waited out.
	r := within(t, got, 10*time.Second, "the new pull's first delivery")
	if r.err != nil {
		t.Fatal(r.err)
	}
	if string(r.m.Data()) != "m0" || lastPin(r.m) != pin {
		t.Fatalf("the new pull got %q under pin %q, want m0 under %q", r.m.Data(), lastPin(r.m), pin)
	}
	if second.PinID() != pin {
		t.Fatalf("the new pull's pin is %q, want %q", second.PinID(), pin)
	}
}

// A pin the consumer does not hold (the consumer was made again since: a
// pin of another incarnation) is answered 423 once a message waits for a
// new pin; the pull then asks without one and is pinned anew, as a pull
// that started without a pin.
func TestStalePinOfAnotherConsumer(t *testing.T) {
	n := testenv.StartNATS(t, testenv.NATSOptions{})
	nc, js := n.Connect(t)
	publish(t, js, 1, true, nil)
	pinnedDurable(t, js)
	subject := jspull.NextSubject(js, "S", "d")
	first, m := firstPinned(t, nc, subject)
	first.Stop()
	stale := lastPin(m)
	if stale == "" {
		t.Fatal("the first delivery came with no pin")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := js.DeleteConsumer(ctx, "S", "d"); err != nil {
		t.Fatal(err)
	}
	pinnedDurable(t, js)

	reqs := watchRequests(t, nc, subject)
	second := pinnedPull(t, nc, subject, stale)
	got := reader(t, second)
	r := within(t, got, 10*time.Second, "the new consumer's first delivery")
	if r.err != nil {
		t.Fatal(r.err)
	}
	if string(r.m.Data()) != "m0" || lastPin(r.m) == "" || lastPin(r.m) == stale {
		t.Fatalf("the new pull got %q under pin %q, want m0 under a new pin (the stale one %q)", r.m.Data(), lastPin(r.m), stale)
	}
	if second.PinID() != lastPin(r.m) {
		t.Fatalf("the pull's pin is %q, its delivery came with %q", second.PinID(), lastPin(r.m))
	}
	sent := takeRequests(t, nc, reqs)
	if len(sent) < 2 || sent[0].PinID != stale || sent[1].PinID != "" {
		t.Fatalf("requests %+v: want the stale pin first, then none", sent)
	}
}

// A pin the consumer does not hold while another is pinned is answered
// 423 at once; the pull asks again without it and is served as a pull
// with no pin is: once the pin is let go.
func TestStalePinWhileAnotherIsPinned(t *testing.T) {
	n := testenv.StartNATS(t, testenv.NATSOptions{})
	nc, js := n.Connect(t)
	publish(t, js, 1, true, nil)
	pinnedDurable(t, js)
	subject := jspull.NextSubject(js, "S", "d")
	first, m := firstPinned(t, nc, subject)
	if err := m.Ack(); err != nil {
		t.Fatal(err)
	}
	first.Stop() // pinned for a minute, to no pull

	reqs := watchRequests(t, nc, subject)
	second := pinnedPull(t, nc, subject, "stale")
	got := reader(t, second)
	var sent []pullRequest
	testenv.Eventually(t, 10*time.Second, "two requests", func() bool {
		sent = append(sent, takeRequests(t, nc, reqs)...)
		return len(sent) >= 2
	})
	if sent[0].PinID != "stale" || sent[1].PinID != "" {
		t.Fatalf("requests %+v: want the stale pin first, then none", sent)
	}
	publish(t, js, 1, false, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, "S")
	if err != nil {
		t.Fatal(err)
	}
	if err := st.UnpinConsumer(ctx, "d", "g"); err != nil {
		t.Fatal(err)
	}
	r := within(t, got, 10*time.Second, "the delivery after the unpin")
	if r.err != nil {
		t.Fatal(r.err)
	}
	if string(r.m.Data()) != "m0" || lastPin(r.m) == "" || second.PinID() != lastPin(r.m) {
		t.Fatalf("the pull got %q under pin %q, its pin is %q", r.m.Data(), lastPin(r.m), second.PinID())
	}
}

// A pin given without a group is not sent (the server refuses a pin id
// from a pull outside a pinned group: 400, ending the pull).
func TestPinWithoutGroupIsNotSent(t *testing.T) {
	n := testenv.StartNATS(t, testenv.NATSOptions{})
	nc, js := n.Connect(t)
	publish(t, js, 1, true, nil)
	durable(t, js, jetstream.AckExplicitPolicy)
	it, err := jspull.Messages(nc, jspull.NextSubject(js, "S", "d"), jspull.Options{Batch: 10, Expiry: 5 * time.Second, PinID: "p"})
	if err != nil {
		t.Fatal(err)
	}
	defer it.Stop()
	if it.PinID() != "" {
		t.Fatalf("the pin of a pull without a group is %q", it.PinID())
	}
	if m, err := next(t, it); err != nil || string(m.Data()) != "m0" {
		t.Fatalf("the first delivery: %v", err)
	}
}
