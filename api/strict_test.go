package api_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/turnstile-dev/turnstile/api"
)

// issue 12 item 11: a key given twice and a field name in another case
// were taken silently (encoding/json keeps the last key and folds case);
// now they are refused, naming the key, and nothing is published.
func TestStrictJSON(t *testing.T) {
	e := newEnv(t, envOptions{noReadModel: true})
	e.create(t, "delta")
	for _, tc := range []struct {
		name, method, path, body string
		field, message           string
	}{
		{"DuplicateID", "POST", "/v1/workspaces", `{"id":"x1","id":"x2"}`, "id", "is given twice"},
		{"CaseFoldedID", "POST", "/v1/workspaces", `{"ID":"x3"}`, "ID", `did you mean "id"?`},
		{"UnicodeFoldedSpec", "POST", "/v1/workspaces", `{"id":"x4","ſpec":{}}`, "ſpec", `did you mean "spec"?`},
		{"DuplicateEnvKey", "PUT", "/v1/workspaces/delta/spec", `{"env":{"A":"1","A":"2"}}`, "env.A", "is given twice"},
		{"CaseFoldedImage", "PUT", "/v1/workspaces/delta/spec", `{"Image":"alpine:3"}`, "Image", `did you mean "image"?`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := e.do(t, tc.method, tc.path, tc.body)
			e.wantStatus(t, r, http.StatusBadRequest)
			b := r.errorBody(t)
			if b.Code != "invalid" || b.Field != tc.field || !strings.Contains(b.Message, tc.message) {
				t.Fatalf("want field %q and %q: %s", tc.field, tc.message, r.body)
			}
		})
	}
	r := e.do(t, "GET", "/v1/workspaces/delta/events", "")
	var h struct{ Events []api.Event }
	r.decode(t, &h)
	if len(h.Events) != 1 {
		t.Fatalf("delta has %d events after refused requests", len(h.Events))
	}
	for _, id := range []string{"x1", "x2", "x3", "x4"} {
		if r := e.do(t, "GET", "/v1/workspaces/"+id+"/events", ""); r.status == http.StatusOK && strings.Contains(string(r.body), `"seq"`) {
			t.Fatalf("%s was created: %s", id, r.body)
		}
	}
}
