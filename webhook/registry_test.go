package webhook_test

import (
	"encoding/json"
	"errors"
	"math"
	"strings"
	"testing"

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
