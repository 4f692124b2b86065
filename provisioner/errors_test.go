package provisioner_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/turnstile-dev/turnstile/provisioner"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestCodeOf(t *testing.T) {
	taken := provisioner.NameTaken("provision", "x", 2, "container", "ws-x", "other")
	for _, tc := range []struct {
		name string
		err  error
		code provisioner.Code
	}{
		{"Nil", nil, ""},
		{"Wrapped", fmt.Errorf("worker: %w", taken), provisioner.CodeNameTaken},
		{"BareContext", fmt.Errorf("call: %w", context.Canceled), provisioner.CodeCanceled},
		{"Canceled", provisioner.Canceled("stop", "x", 3, context.DeadlineExceeded), provisioner.CodeCanceled},
		{"Other", errors.New("boom"), provisioner.CodeEngine},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := provisioner.CodeOf(tc.err); got != tc.code {
				t.Fatalf("CodeOf(%v) = %q, want %q", tc.err, got, tc.code)
			}
		})
	}
}

func TestError(t *testing.T) {
	err := provisioner.ImageNotFound("provision", "x", 4, "foo:1", nil)
	if got, want := err.Error(), "provision x (generation 4): image not found: foo:1: build it locally or pass another --image"; got != want {
		t.Fatalf("Error() = %q, want %q", got, want)
	}
	if provisioner.ReasonOf(fmt.Errorf("wrapped: %w", err)) != err.Reason || !err.Permanent() {
		t.Fatalf("ReasonOf or Permanent wrong for %v", err)
	}
	c := provisioner.Canceled("provision", "x", 4, context.Canceled)
	if !errors.Is(c, context.Canceled) || c.Permanent() {
		t.Fatalf("canceled error %v: want errors.Is context.Canceled and transient", c)
	}
	if s := provisioner.Superseded("stop", "x", 2, 5).Reason; !strings.Contains(s, "generation 5") || !strings.Contains(s, "ws-x") {
		t.Fatalf("superseded reason %q", s)
	}
	if s := provisioner.NameTaken("provision", "x", 1, "volume", "ws-x-data", "").Reason; !strings.Contains(s, "does not manage") {
		t.Fatalf("unlabelled owner reason %q", s)
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		ws  string
		gen uint64
		ok  bool
	}{{"a", 1, true}, {"a-b-1", 9, true}, {"", 1, false}, {"A", 1, false}, {"a", 0, false}, {"a.b", 1, false}} {
		err := provisioner.Validate("provision", tc.ws, tc.gen)
		if (err == nil) != tc.ok || (err != nil && provisioner.CodeOf(err) != provisioner.CodeInvalid) {
			t.Errorf("Validate(%q, %d) = %v", tc.ws, tc.gen, err)
		}
	}
	if provisioner.ValidateInstallation("prod-eu-1") != nil || provisioner.ValidateInstallation("Prod EU") == nil || provisioner.ValidateInstallation("") == nil {
		t.Error("ValidateInstallation")
	}
	if provisioner.ContainerName("x") != "ws-x" || provisioner.VolumeName("x") != "ws-x-data" {
		t.Error("names")
	}
}
