package provisioner_test

import (
	"strings"
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

// TestRedactorMultiLine: a text that holds only the end of a multi-line
// secret (a log tail cut to its last lines) loses each of its lines; only
// lines too short to matter stay. Before, only the whole value matched and
// the key's last lines went into the failure reason.
func TestRedactorMultiLine(t *testing.T) {
	key := "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n  BKcwggSjAgEAAoIBAQC7\r\nab\n-----END PRIVATE KEY-----"
	r := provisioner.NewRedactor(map[string]string{"KEY": "key", "PW": "pw"},
		fsm.Spec{Env: map[string]string{"KEY": key, "PW": "hunter2"}})
	if r.Newlines() != 4 {
		t.Errorf("Newlines() = %d, want 4", r.Newlines())
	}
	for in, want := range map[string]string{
		"fatal: " + key + "\nbye":                                 "fatal: secret://key\nbye",
		"BKcwggSjAgEAAoIBAQC7\r\nab\n-----END PRIVATE KEY-----\n": "secret://key\nab\nsecret://key\n",
		// Written on a terminal: every line end "\r\n", the short line too.
		"fatal: " + strings.ReplaceAll(strings.ReplaceAll(key, "\r\n", "\n"), "\n", "\r\n") + "\r\nbye": "fatal: secret://key\nbye",
		"MIIEvQIBADANBgkqhkiG9w0BAQEFAASC hunter2":                                                      "secret://key secret://pw",
	} {
		if got := r.Redact(in); got != want {
			t.Errorf("Redact(%q) = %q, want %q", in, got, want)
		}
	}
	if got := r.Redact("ab abc"); got != "ab abc" {
		t.Errorf("a short line of the key was replaced in %q", got)
	}
	if n := provisioner.NewRedactor(map[string]string{"PW": "pw"}, fsm.Spec{Env: map[string]string{"PW": "hunter2"}}).Newlines(); n != 0 {
		t.Errorf("Newlines() of a one-line secret = %d", n)
	}
}

// TestRedactorSurroundingSpace: a secret file that ends in a newline (as
// `echo pw > file` and most editors write it; `secret set --from-file` and
// --secrets-dir keep it) gives a value the program prints without it, or
// whose newline the text loses (a health check's output is trimmed, a
// log's last line has no end): the value without its surrounding space
// goes too, however short. Before, only the whole value, and lines of 8
// bytes or more, were replaced: "hunter2\n" stayed in the reason. Found
// in review.
func TestRedactorSurroundingSpace(t *testing.T) {
	r := provisioner.NewRedactor(map[string]string{"PW": "pw", "PIN": "pin"},
		fsm.Spec{Env: map[string]string{"PW": "hunter2\n", "PIN": " 4711\r\n"}})
	for in, want := range map[string]string{
		"auth failed for password hunter2":   "auth failed for password secret://pw",
		"auth failed for password hunter2\n": "auth failed for password secret://pw",
		"pin 4711 wrong":                     "pin secret://pin wrong",
	} {
		if got := r.Redact(in); got != want {
			t.Errorf("Redact(%q) = %q, want %q", in, got, want)
		}
	}
}
