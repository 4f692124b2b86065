package provisioner_test

import (
	"testing"

	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/provisioner"
)

// TestRedactor: every resolved secret value in a text becomes its
// reference, a value holding another goes whole, plain env values and the
// zero Redactor change nothing.
func TestRedactor(t *testing.T) {
	refs := map[string]string{"DB_URL": "db", "DB_PASSWORD": "pw", "EMPTY": "empty"}
	resolved := fsm.Spec{Env: map[string]string{
		"DB_URL": "postgres://app:hunter2@db:5432", "DB_PASSWORD": "hunter2", "EMPTY": "", "PLAIN": "visible",
	}}
	r := provisioner.NewRedactor(refs, resolved)
	for in, want := range map[string]string{
		"fatal: cannot connect to postgres://app:hunter2@db:5432 (visible)": "fatal: cannot connect to secret://db (visible)",
		"password hunter2 refused; hunter2 again":                           "password secret://pw refused; secret://pw again",
		"nothing secret here":                                               "nothing secret here",
		"":                                                                  "",
	} {
		if got := r.Redact(in); got != want {
			t.Errorf("Redact(%q) = %q, want %q", in, got, want)
		}
	}
	if got := (provisioner.Redactor{}).Redact("hunter2"); got != "hunter2" {
		t.Errorf("the zero Redactor changed %q to %q", "hunter2", got)
	}
	if got := provisioner.NewRedactor(nil, resolved).Redact("hunter2 visible"); got != "hunter2 visible" {
		t.Errorf("a Redactor without references changed the text to %q", got)
	}
}
