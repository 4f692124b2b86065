package main

import (
	"testing"

	"github.com/turnstile-dev/turnstile/fsm"
)

// TestSpecValuesCannotForgeFields: get's SPEC line and audit's states
// are "image k=v label:k=v" with spaces between; an env or label value
// with a space is quoted, so it cannot add a field that reads as the
// spec's own (profile=restricted, another label).
func TestSpecValuesCannotForgeFields(t *testing.T) {
	s := fsm.Spec{Image: "img", Profile: "privileged",
		Env:    map[string]string{"A": "1 profile=restricted", "B": `say "hi"`, "C": "plain", "D": ""},
		Labels: map[string]string{"team": "x label:owner=root"}}
	got := describeSpec(s)
	want := `img profile=privileged A="1 profile=restricted" B="say \"hi\"" C=plain D= label:team="x label:owner=root"`
	if got != want {
		t.Errorf("describeSpec = %s\nwant            %s", got, want)
	}
}
