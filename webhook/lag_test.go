package webhook_test

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/internal/testenv"
	"github.com/turnstile-dev/turnstile/webhook"
)

// While the receiver is down each retry costs one consumer-info request,
// the check that the event is still this serve's, and that one answer
// keeps the lag right: events recorded meanwhile show in it.
func TestLagWhileDownTakesOneConsumerInfoPerRetry(t *testing.T) {
	f := newFixture(t)
	rcv := newReceiver(t, modeStatus)
	start := f.lastSeq(t)
	h, err := f.reg.Add(t.Context(), webhook.Spec{URL: rcv.URL})
	if err != nil {
		t.Fatal(err)
	}
	rcv.setSecret(h.Secret)
	reg := prometheus.NewRegistry()
	f.dispatcher(t, reg)
	f.send(t, fsm.Create, "l1")
	testenv.Eventually(t, 30*time.Second, "the first event to be retried", func() bool { return rcv.tries() >= 2 })
	for _, ws := range []string{"l2", "l3", "l4"} {
		f.send(t, fsm.Create, ws)
	}
	want := float64(len(f.eventSeqs(t, start))) // the one tried and those behind it
	if want < 4 {
		t.Fatalf("%v events since the add, want at least 4", want)
	}
	lag := func() float64 { return counter(t, reg, "turnstile_webhook_lag", "webhook", h.ID) }
	testenv.Eventually(t, 30*time.Second, "the lag to count the events recorded while down", func() bool { return lag() == want })

	infos := consumerInfos(t, f, webhook.Durable(h.ID))
	from := rcv.tries()
	testenv.Eventually(t, 30*time.Second, "ten more failed attempts", func() bool { return rcv.tries() >= from+10 })
	attempts := rcv.tries() - from
	n := infos()
	upTo := rcv.tries() - from
	// One check before each attempt, which the receiver counts after it.
	// The window's edges: an attempt under way when counting began can
	// have its check before the count and its attempt in it (one less), an
	// attempt just before it its check in the count and its attempt before
	// from (one more), one under way at the end its check in the count and
	// its attempt not yet (one more). Every attempt counted before n was
	// read had its check counted; attempts go on while it is read.
	if n < attempts-1 || n > upTo+2 {
		t.Fatalf("%d consumer-info requests over %d to %d failed attempts; want one each", n, attempts, upTo)
	}
	if got := lag(); got != want {
		t.Fatalf("lag %v after the retries, want %v", got, want)
	}
}

// consumerInfos counts the consumer-info requests for durable on the event
// stream from now on: each call of the returned func says how many so far.
// A request is counted once the dispatcher has its answer: the copy to this
// subscription is queued before the answer, and flushing delivers it.
func consumerInfos(t *testing.T, f *fixture, durable string) func() int {
	t.Helper()
	nc, _ := f.core.Connect(t)
	return testenv.Requests(t, nc, "$JS.API.CONSUMER.INFO."+f.names.EventStream()+"."+durable, "")
}
