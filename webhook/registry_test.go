package webhook_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/internal/testenv"
	"github.com/turnstile-dev/turnstile/webhook"
)

// Bad specs are refused with the field named, and change nothing: no
// entry, no consumer.
func TestAddRefusesBadSpecs(t *testing.T) {
	core := testenv.StartCore(t, testenv.CoreOptions{})
	n := events.NewNames("")
	reg, err := webhook.OpenRegistry(t.Context(), core.JS, core.Store, webhook.RegistryOptions{Memory: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		spec  webhook.Spec
		field string
	}{
		{"FTP", webhook.Spec{URL: "ftp://example.com/x"}, "url"},
		{"NoScheme", webhook.Spec{URL: "example.com/x"}, "url"},
		{"UserInfo", webhook.Spec{URL: "https://user:pw@example.com/x"}, "url"},
		{"NoHost", webhook.Spec{URL: "https:///x"}, "url"},
		{"Loopback", webhook.Spec{URL: "http://127.0.0.1:9/x"}, "url"},
		{"LoopbackV6", webhook.Spec{URL: "http://[::1]:9/x"}, "url"},
		{"MappedLoopback", webhook.Spec{URL: "http://[::ffff:127.0.0.1]/x"}, "url"},
		{"Metadata", webhook.Spec{URL: "http://169.254.169.254/latest"}, "url"},
		{"Private", webhook.Spec{URL: "https://10.1.2.3/x"}, "url"},
		{"Localhost", webhook.Spec{URL: "http://localhost:8080/x"}, "url"},
		{"SingleLabel", webhook.Spec{URL: "http://receiver/x"}, "url"},
		{"Unspecified", webhook.Spec{URL: "http://0.0.0.0/x"}, "url"},
		{"Long", webhook.Spec{URL: "https://example.com/" + strings.Repeat("a", webhook.MaxURLLen)}, "url"},
		{"UnknownEvent", webhook.Spec{URL: "https://example.com/x", Events: []fsm.EventType{"workspace.exploded"}}, "events"},
		{"SixToFourLoopback", webhook.Spec{URL: "http://[2002:7f00:1::1]/x"}, "url"},
		{"IPv4CompatibleLoopback", webhook.Spec{URL: "http://[::127.0.0.1]/x"}, "url"},
		// since+1 is where the replay starts: the largest sequence would
		// wrap to 0.
		{"SinceOverflow", webhook.Spec{URL: "https://example.com/x", Since: new(uint64(math.MaxUint64))}, "since"},
		{"SinceBeyondInt64", webhook.Spec{URL: "https://example.com/x", Since: new(uint64(math.MaxInt64) + 1)}, "since"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := reg.Add(t.Context(), tc.spec)
			var ie *webhook.InvalidError
			if !errors.As(err, &ie) || ie.Field != tc.field {
				t.Fatalf("Add(%+v): %v, want an InvalidError of %s", tc.spec, err, tc.field)
			}
		})
	}
	list, err := reg.List(t.Context())
	if err != nil || len(list) != 0 {
		t.Fatalf("list after refusals: %+v %v", list, err)
	}
	st, err := core.JS.Stream(t.Context(), n.EventStream())
	if err != nil {
		t.Fatal(err)
	}
	for name := range st.ConsumerNames(t.Context()).Name() {
		if strings.HasPrefix(name, "webhook-") {
			t.Fatalf("a refused add left consumer %s", name)
		}
	}
	// A public name is accepted (its address is checked at each dial).
	h, err := reg.Add(t.Context(), webhook.Spec{URL: "https://hooks.example.com/turnstile"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(h.Secret, "whsec_") || webhook.ValidateID(h.ID) != nil {
		t.Fatalf("added: %+v", h)
	}
	// The list never shows the secret.
	list, err = reg.List(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(list)
	if len(list) != 1 || strings.Contains(string(b), h.Secret) || strings.Contains(string(b), "secret") {
		t.Fatalf("list: %s", b)
	}
	if err := reg.Remove(t.Context(), "nope"); err == nil {
		t.Fatal("removed a malformed id")
	}
}

// A since past the event stream's last sequence is refused, naming that
// sequence, and changes nothing: its consumer would have skipped every
// event recorded up to since. A since at the last sequence replays
// nothing and delivers what comes next.
func TestAddRefusesSincePastTheStream(t *testing.T) {
	f := newFixture(t)
	f.send(t, fsm.Create, "before")
	last := f.lastSeq(t) // nothing else writes to the stream in this test
	rcv := newReceiver(t, modeOK)
	for _, since := range []uint64{last + 1, 999999} {
		_, err := f.reg.Add(t.Context(), webhook.Spec{URL: rcv.URL, Since: &since})
		var ie *webhook.InvalidError
		if !errors.As(err, &ie) || ie.Field != "since" ||
			!strings.Contains(ie.Message, fmt.Sprintf("past the event stream's last sequence, %d", last)) {
			t.Fatalf("since %d with the stream at %d: %v, want an InvalidError of since naming %d", since, last, err, last)
		}
	}
	list, err := f.reg.List(t.Context())
	if err != nil || len(list) != 0 {
		t.Fatalf("list after refusals: %+v %v", list, err)
	}
	st, err := f.core.JS.Stream(t.Context(), f.names.EventStream())
	if err != nil {
		t.Fatal(err)
	}
	for name := range st.ConsumerNames(t.Context()).Name() {
		if strings.HasPrefix(name, "webhook-") {
			t.Fatalf("a refused add left consumer %s", name)
		}
	}

	h, err := f.reg.Add(t.Context(), webhook.Spec{URL: rcv.URL, Since: &last})
	if err != nil {
		t.Fatalf("since at the last sequence %d: %v", last, err)
	}
	rcv.setSecret(h.Secret)
	f.dispatcher(t, nil)
	f.send(t, fsm.Create, "after")
	want := f.eventSeqs(t, last)
	testenv.Eventually(t, 30*time.Second, "the new event", func() bool { return len(rcv.seqs()) == len(want) })
	if got := rcv.seqs(); !slices.Equal(got, want) {
		t.Fatalf("delivered %v, want %v", got, want)
	}
}

// An internal destination's refusal names the switch that allows it.
func TestAddRefusalNamesAllowPrivate(t *testing.T) {
	core := testenv.StartCore(t, testenv.CoreOptions{})
	reg, err := webhook.OpenRegistry(t.Context(), core.JS, core.Store, webhook.RegistryOptions{Memory: true})
	if err != nil {
		t.Fatal(err)
	}
	for url, want := range map[string]string{
		"http://127.0.0.1:9/x":       "url: 127.0.0.1: webhook destination is not a public address (serve's --webhook-allow-private allows it)",
		"http://localhost:8080/hook": "url: localhost is a local name: webhook destination is not a public address (serve's --webhook-allow-private allows it)",
	} {
		_, err := reg.Add(t.Context(), webhook.Spec{URL: url})
		if err == nil || err.Error() != want {
			t.Errorf("Add(%s): %v, want %q", url, err, want)
		}
	}
}
