package webhook_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/synadia-io/orbit.go/jetstreamext"

	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/internal/testenv"
	"github.com/turnstile-dev/turnstile/webhook"
)

// Receiver modes.
const (
	modeOK     = iota // 204
	modeStatus        // 503
	modeHangUp        // the connection closed without an answer
)

// receiver is a webhook endpoint on an httptest server that records what
// it accepted and verifies every signature.
type receiver struct {
	*httptest.Server
	mu       sync.Mutex
	mode     int
	secret   string
	attempts int
	got      []webhook.Delivery // accepted, in arrival order
	headers  []http.Header      // of got
	badSigs  []string
}

func newReceiver(t *testing.T, mode int) *receiver {
	t.Helper()
	r := &receiver{mode: mode}
	r.Server = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.Close)
	return r
}

func (r *receiver) serve(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(req.Body)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.attempts++
	switch r.mode {
	case modeStatus:
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	case modeHangUp:
		if conn, _, herr := http.NewResponseController(w).Hijack(); herr == nil {
			_ = conn.Close()
		}
		return
	}
	if err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	if err := webhook.Verify(r.secret, req.Header.Get(webhook.HeaderSignature), body, 5*time.Minute, time.Now()); err != nil {
		r.badSigs = append(r.badSigs, err.Error())
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	var d webhook.Delivery
	if err := json.Unmarshal(body, &d); err != nil {
		r.badSigs = append(r.badSigs, "body: "+err.Error())
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	r.got = append(r.got, d)
	r.headers = append(r.headers, req.Header.Clone())
	w.WriteHeader(http.StatusNoContent)
}

func (r *receiver) set(mode int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.mode = mode
}

func (r *receiver) setSecret(s string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.secret = s
}

func (r *receiver) tries() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.attempts
}

// seqs are the stream sequences of the accepted deliveries, repeats
// dropped as a receiver drops them (by delivery id), in arrival order.
func (r *receiver) seqs() []uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []uint64
	seen := map[string]bool{}
	for _, d := range r.got {
		if !seen[d.ID] {
			seen[d.ID] = true
			out = append(out, d.StreamSeq)
		}
	}
	return out
}

func (r *receiver) signatureErrors() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.badSigs)
}

// fixture is a core (NATS, streams, engine) with a webhook registry.
type fixture struct {
	core  *testenv.Core
	names events.Names
	reg   *webhook.Registry
	cl    interface {
		Send(context.Context, fsm.Command) (events.OutcomeRecord, error)
	}
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	core := testenv.StartCore(t, testenv.CoreOptions{})
	ctx := t.Context()
	reg, err := webhook.OpenRegistry(ctx, core.JS, core.Store, webhook.RegistryOptions{AllowPrivate: true, Memory: true})
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{core: core, names: events.NewNames(""), reg: reg, cl: core.Client(t, "tester")}
}

// dispatcher opens a dispatcher with short back-offs, closed when the
// test ends (or earlier by the caller).
func (f *fixture) dispatcher(t *testing.T, reg prometheus.Registerer) *webhook.Dispatcher {
	t.Helper()
	d, err := webhook.New(webhook.Config{Store: f.core.Store, Registry: f.reg, AllowPrivate: true,
		AttemptTimeout: 5 * time.Second, MinBackoff: 5 * time.Millisecond, MaxBackoff: 50 * time.Millisecond,
		Registerer: reg, Logger: testenv.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Open(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close() })
	return d
}

func (f *fixture) send(t *testing.T, typ fsm.CommandType, ws string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	o, err := f.cl.Send(ctx, fsm.Command{Type: typ, Workspace: ws})
	if err != nil {
		t.Fatal(err)
	}
	if o.Outcome != fsm.Accepted {
		t.Fatalf("%s %s: %+v", typ, ws, o)
	}
}

// eventSeqs are the stream sequences of every event message after after.
func (f *fixture) eventSeqs(t *testing.T, after uint64) []uint64 {
	t.Helper()
	msgs, err := jetstreamext.GetBatch(t.Context(), f.core.JS, f.names.EventStream(), 1000,
		jetstreamext.GetBatchSeq(after+1), jetstreamext.GetBatchSubject(f.names.Events()))
	if err != nil {
		t.Fatal(err)
	}
	var out []uint64
	for m, err := range msgs {
		if errors.Is(err, jetstreamext.ErrNoMessages) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, m.Sequence)
	}
	return out
}

// lastSeq is the event stream's last sequence.
func (f *fixture) lastSeq(t *testing.T) uint64 {
	t.Helper()
	st, err := f.core.JS.Stream(t.Context(), f.names.EventStream())
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.LastSeq
}

func (f *fixture) consumerExists(t *testing.T, id string) bool {
	t.Helper()
	_, err := f.core.JS.Consumer(t.Context(), f.names.EventStream(), webhook.Durable(id))
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		return false
	}
	if err != nil {
		t.Fatal(err)
	}
	return true
}

func counter(t *testing.T, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metric:
		for _, m := range mf.GetMetric() {
			have := map[string]string{}
			for _, l := range m.GetLabel() {
				have[l.GetName()] = l.GetValue()
			}
			for i := 0; i+1 < len(labels); i += 2 {
				if have[labels[i]] != labels[i+1] {
					continue metric
				}
			}
			if m.GetCounter() != nil {
				return m.GetCounter().GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	return 0
}
