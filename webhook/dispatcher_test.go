package webhook_test

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/internal/testenv"
	"github.com/turnstile-dev/turnstile/webhook"
)

// A receiver that answers 503, then hangs up, across a dispatcher
// restart, gets every event since the add once it recovers: in stream
// order, no gaps, each signature valid, each header naming its event.
func TestReceiverOutageThenRecovery(t *testing.T) {
	f := newFixture(t)
	rcv := newReceiver(t, modeStatus)
	start := f.lastSeq(t)
	h, err := f.reg.Add(t.Context(), webhook.Spec{URL: rcv.URL + "/hook"})
	if err != nil {
		t.Fatal(err)
	}
	rcv.setSecret(h.Secret)
	reg1 := prometheus.NewRegistry()
	d1 := f.dispatcher(t, reg1)

	f.send(t, fsm.Create, "w1")
	f.send(t, fsm.Create, "w2")
	testenv.Eventually(t, 30*time.Second, "503s to be retried", func() bool { return rcv.tries() >= 3 })
	rcv.set(modeHangUp)
	tries := rcv.tries()
	testenv.Eventually(t, 30*time.Second, "hang-ups to be retried", func() bool { return rcv.tries() >= tries+3 })
	if got := counter(t, reg1, "turnstile_webhook_retries_total", "reason", "status"); got < 1 {
		t.Fatalf("retries by status: %v", got)
	}
	if got := counter(t, reg1, "turnstile_webhook_retries_total", "reason", "transport"); got < 1 {
		t.Fatalf("retries by transport: %v", got)
	}
	if got := counter(t, reg1, "turnstile_webhook_lag", "webhook", h.ID); got != 2 {
		t.Fatalf("lag while down: %v, want 2", got)
	}
	if err := d1.Close(); err != nil {
		t.Fatal(err)
	}

	// serve restarts while the receiver is still down; more happens.
	f.send(t, fsm.Create, "w3")
	f.send(t, fsm.Delete, "w1")
	reg2 := prometheus.NewRegistry()
	f.dispatcher(t, reg2)
	rcv.set(modeOK)

	want := f.eventSeqs(t, start)
	if len(want) != 4 {
		t.Fatalf("events since the add: %v", want)
	}
	testenv.Eventually(t, 30*time.Second, "every event since the add", func() bool { return len(rcv.seqs()) >= len(want) })
	if got := rcv.seqs(); !slices.Equal(got, want) {
		t.Fatalf("delivered %v, want %v (in order, no gaps, nothing else)", got, want)
	}
	if bad := rcv.signatureErrors(); len(bad) != 0 {
		t.Fatalf("signatures: %v", bad)
	}
	rcv.mu.Lock()
	for i, d := range rcv.got {
		hd := rcv.headers[i]
		if d.Webhook != h.ID || d.ID != fmt.Sprintf("%s-%d", h.ID, d.StreamSeq) || hd.Get(webhook.HeaderDelivery) != d.ID ||
			hd.Get(webhook.HeaderEventSeq) != strconv.FormatUint(d.StreamSeq, 10) || hd.Get(webhook.HeaderEventType) != string(d.Type) ||
			hd.Get(webhook.HeaderWebhook) != h.ID || d.Event == nil {
			t.Errorf("delivery %d: %+v, headers %v", i, d, hd)
		}
	}
	rcv.mu.Unlock()
	testenv.Eventually(t, 10*time.Second, "lag 0 and 4 delivered", func() bool {
		return counter(t, reg2, "turnstile_webhook_lag", "webhook", h.ID) == 0 &&
			counter(t, reg2, "turnstile_webhook_deliveries_total", "result", webhook.ResultDelivered) == 4
	})
	list, err := f.reg.List(t.Context())
	if err != nil || len(list) != 1 || list[0].AckedStreamSeq != want[len(want)-1] || list[0].Pending != 0 {
		t.Fatalf("list: %+v %v", list, err)
	}
}

// Removing a webhook deletes its consumer and entry: later events go to
// the webhooks that remain and not to it.
func TestRemoveStopsDeliveries(t *testing.T) {
	f := newFixture(t)
	a, b := newReceiver(t, modeOK), newReceiver(t, modeOK)
	ha, err := f.reg.Add(t.Context(), webhook.Spec{URL: a.URL})
	if err != nil {
		t.Fatal(err)
	}
	a.setSecret(ha.Secret)
	hb, err := f.reg.Add(t.Context(), webhook.Spec{URL: b.URL})
	if err != nil {
		t.Fatal(err)
	}
	b.setSecret(hb.Secret)
	reg := prometheus.NewRegistry()
	f.dispatcher(t, reg)

	f.send(t, fsm.Create, "r1")
	testenv.Eventually(t, 30*time.Second, "both to get the create", func() bool { return len(a.seqs()) == 1 && len(b.seqs()) == 1 })
	if err := f.reg.Remove(t.Context(), ha.ID); err != nil {
		t.Fatal(err)
	}
	if f.consumerExists(t, ha.ID) {
		t.Fatal("the removed webhook's consumer is still there")
	}
	if _, err := f.reg.Get(t.Context(), ha.ID); !errors.Is(err, webhook.ErrNotFound) {
		t.Fatalf("get after remove: %v", err)
	}
	if err := f.reg.Remove(t.Context(), ha.ID); !errors.Is(err, webhook.ErrNotFound) {
		t.Fatalf("second remove: %v", err)
	}
	f.send(t, fsm.Create, "r2")
	testenv.Eventually(t, 30*time.Second, "the remaining webhook to get the second create", func() bool { return len(b.seqs()) == 2 })
	if got := a.seqs(); len(got) != 1 {
		t.Fatalf("the removed webhook got %v", got)
	}
	list, err := f.reg.List(t.Context())
	if err != nil || len(list) != 1 || list[0].ID != hb.ID {
		t.Fatalf("list: %+v %v", list, err)
	}
	testenv.Eventually(t, 10*time.Second, "the removed webhook's lag series to go", func() bool {
		mfs, _ := reg.Gather()
		for _, mf := range mfs {
			for _, m := range mf.GetMetric() {
				for _, l := range m.GetLabel() {
					if l.GetValue() == ha.ID {
						return false
					}
				}
			}
		}
		return true
	})
}

// An unreadable message on an event subject is skipped and counted, and
// events of types the webhook did not ask for are acked unsent: neither
// stalls what follows.
func TestUnreadableSkippedAndFilter(t *testing.T) {
	f := newFixture(t)
	rcv := newReceiver(t, modeOK)
	h, err := f.reg.Add(t.Context(), webhook.Spec{URL: rcv.URL, Events: []fsm.EventType{fsm.Created, fsm.Created}})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(h.Events, []fsm.EventType{fsm.Created}) {
		t.Fatalf("events not normalised: %v", h.Events)
	}
	rcv.setSecret(h.Secret)
	reg := prometheus.NewRegistry()
	f.dispatcher(t, reg)

	if _, err := f.core.JS.Publish(t.Context(), f.names.Event("junk"), []byte("not an envelope")); err != nil {
		t.Fatal(err)
	}
	f.send(t, fsm.Create, "u1")
	f.send(t, fsm.Delete, "u1")
	f.send(t, fsm.Create, "u2")
	testenv.Eventually(t, 30*time.Second, "both creates", func() bool { return len(rcv.seqs()) == 2 })
	rcv.mu.Lock()
	for _, d := range rcv.got {
		if d.Type != fsm.Created {
			t.Errorf("delivered a %s", d.Type)
		}
	}
	rcv.mu.Unlock()
	testenv.Eventually(t, 10*time.Second, "the counters", func() bool {
		return counter(t, reg, "turnstile_quarantined_messages_total", "component", "webhook", "reason", "malformed") == 1 &&
			counter(t, reg, "turnstile_webhook_deliveries_total", "result", webhook.ResultFiltered) == 1 &&
			counter(t, reg, "turnstile_webhook_deliveries_total", "result", webhook.ResultDelivered) == 2
	})
}

// A replay: Since delivers what was recorded before the add.
func TestSinceReplays(t *testing.T) {
	f := newFixture(t)
	f.send(t, fsm.Create, "old")
	before := f.eventSeqs(t, 0)
	rcv := newReceiver(t, modeOK)
	since := before[0] - 1
	h, err := f.reg.Add(t.Context(), webhook.Spec{URL: rcv.URL, Since: &since})
	if err != nil {
		t.Fatal(err)
	}
	rcv.setSecret(h.Secret)
	f.dispatcher(t, nil)
	f.send(t, fsm.Create, "new")
	want := f.eventSeqs(t, 0)
	testenv.Eventually(t, 30*time.Second, "the old and the new event", func() bool { return len(rcv.seqs()) == 2 })
	if got := rcv.seqs(); !slices.Equal(got, want) {
		t.Fatalf("delivered %v, want %v", got, want)
	}
}

// The defaults are valid; back-off bounds the wrong way round are refused.
func TestConfigDefaults(t *testing.T) {
	f := newFixture(t)
	if _, err := webhook.New(webhook.Config{Store: f.core.Store, Registry: f.reg, AllowPrivate: true}); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	if _, err := webhook.New(webhook.Config{Store: f.core.Store, Registry: f.reg, AllowPrivate: true, MinBackoff: time.Second, MaxBackoff: time.Millisecond}); err == nil {
		t.Fatal("a MaxBackoff under MinBackoff was accepted")
	}
	if _, err := webhook.New(webhook.Config{Store: f.core.Store, Registry: f.reg}); err == nil {
		t.Fatal("a dispatcher that disagrees with its registry on AllowPrivate was accepted")
	}
}
