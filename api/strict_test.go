package api_test

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/turnstile-dev/turnstile/api"
	"github.com/turnstile-dev/turnstile/webhook"
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

// withWebhooks gives an env's API a webhook registry in memory.
func withWebhooks(t *testing.T) func(*api.Config) {
	return func(c *api.Config) {
		js, err := jetstream.New(c.NC)
		if err != nil {
			t.Fatal(err)
		}
		reg, err := webhook.OpenRegistry(context.Background(), js, c.Store, webhook.RegistryOptions{Memory: true})
		if err != nil {
			t.Fatal(err)
		}
		c.Webhooks = reg
	}
}

// A body is one JSON object and nothing after it: data after the object
// that starts with '}' or ']' was let through (dec.More() is false for
// them), and null decoded as an empty object, so a PUT of null cleared the
// spec. All are 400 naming body, and nothing is published or added.
func TestBodyIsOneObject(t *testing.T) {
	e := newEnv(t, envOptions{noReadModel: true, configure: withWebhooks(t)})
	e.create(t, "delta")
	for _, tc := range []struct {
		name, method, path, body string
		message                  string
	}{
		{"CreateTrailingBrace", "POST", "/v1/workspaces", `{"id":"tb1"}}`, "data after the JSON object"},
		{"CreateTrailingBracket", "POST", "/v1/workspaces", `{"id":"tb2"}]garbage{{{`, "data after the JSON object"},
		{"CreateTrailingSpaceBrace", "POST", "/v1/workspaces", "{\"id\":\"tb3\"}\n }", "data after the JSON object"},
		{"ConfigureTrailingBracket", "PUT", "/v1/workspaces/delta/spec", `{"image":"alpine:3"}]`, "data after the JSON object"},
		{"WebhookTrailingBracket", "POST", "/v1/webhooks", `{"url":"https://hooks.example.com/t"}]`, "data after the JSON object"},
		{"CreateNull", "POST", "/v1/workspaces", `null`, "must be a JSON object, not null"},
		{"ConfigureNull", "PUT", "/v1/workspaces/delta/spec", ` null `, "must be a JSON object, not null"},
		{"WebhookNull", "POST", "/v1/webhooks", `null`, "must be a JSON object, not null"},
		{"ConfigureArray", "PUT", "/v1/workspaces/delta/spec", `[{"image":"alpine:3"}]`, "must be a JSON object, not an array"},
		{"ConfigureString", "PUT", "/v1/workspaces/delta/spec", `"alpine:3"`, "must be a JSON object, not a string"},
		{"ConfigureNumber", "PUT", "/v1/workspaces/delta/spec", `7`, "must be a JSON object, not a number"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := e.do(t, tc.method, tc.path, tc.body)
			e.wantStatus(t, r, http.StatusBadRequest)
			b := r.errorBody(t)
			if b.Code != "invalid" || b.Field != "body" || !strings.Contains(b.Message, tc.message) {
				t.Fatalf("want field body and %q: %s", tc.message, r.body)
			}
		})
	}
	r := e.do(t, "GET", "/v1/workspaces/delta/events", "")
	var h struct{ Events []api.Event }
	r.decode(t, &h)
	if len(h.Events) != 1 {
		t.Fatalf("delta has %d events after refused requests: %s", len(h.Events), r.body)
	}
	for _, id := range []string{"tb1", "tb2", "tb3"} {
		e.wantStatus(t, e.do(t, "GET", "/v1/workspaces/"+id+"/events", ""), http.StatusNotFound)
	}
	var l api.WebhookList
	e.do(t, "GET", "/v1/webhooks", "").decode(t, &l)
	if len(l.Webhooks) != 0 {
		t.Fatalf("refused adds left %+v", l.Webhooks)
	}
}

// docs/operations.md: a query parameter a route does not take, or one
// given twice, is 400 naming it. The command routes, wait, list, cluster,
// the webhook writes and the document itself ignored them (wait's ?gen=7,
// a misspelled generation, answered reached at generation 1; ?force=1 on a
// delete was ignored). Start, stop, restart and the deletes take no body,
// and refuse one rather than ignore it. Nothing is published.
func TestQueryAndBodyNotTaken(t *testing.T) {
	e := newEnv(t, envOptions{noReadModel: true, configure: withWebhooks(t)})
	e.create(t, "delta")
	for _, tc := range []struct {
		name, method, path, body string
		field                    string
	}{
		{"CreateForce", "POST", "/v1/workspaces?force=1", `{"id":"qp1"}`, "force"},
		{"ConfigureForce", "PUT", "/v1/workspaces/delta/spec?force=1", `{"image":"alpine:3"}`, "force"},
		{"StartForce", "POST", "/v1/workspaces/delta/start?force=1", ``, "force"},
		{"StopForce", "POST", "/v1/workspaces/delta/stop?force=1", ``, "force"},
		{"RestartForce", "POST", "/v1/workspaces/delta/restart?force=1", ``, "force"},
		{"DeleteForce", "DELETE", "/v1/workspaces/delta?force=1", ``, "force"},
		{"WaitMisspelledGeneration", "GET", "/v1/workspaces/delta/wait?state=provisioning&gen=7&timeout=0", ``, "gen"},
		{"WaitStateTwice", "GET", "/v1/workspaces/delta/wait?state=provisioning&state=running&timeout=0", ``, "state"},
		{"ListWatch", "GET", "/v1/workspaces?watch=true", ``, "watch"},
		{"ListLimitTwice", "GET", "/v1/workspaces?limit=1&limit=5000", ``, "limit"},
		{"Cluster", "GET", "/v1/cluster?x=1", ``, "x"},
		{"AddWebhook", "POST", "/v1/webhooks?x=1", `{"url":"https://hooks.example.com/t"}`, "x"},
		{"RemoveWebhook", "DELETE", "/v1/webhooks/wh-0123456789abcdef?x=1", ``, "x"},
		{"OpenAPI", "GET", "/v1/openapi.json?x=1", ``, "x"},
		{"StopBody", "POST", "/v1/workspaces/delta/stop", `{"force":true}`, "body"},
		{"StartEmptyObject", "POST", "/v1/workspaces/delta/start", `{}`, "body"},
		{"RestartBody", "POST", "/v1/workspaces/delta/restart", `{}`, "body"},
		{"DeleteBody", "DELETE", "/v1/workspaces/delta", `{"force":true}`, "body"},
		{"RemoveWebhookBody", "DELETE", "/v1/webhooks/wh-0123456789abcdef", `{}`, "body"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := e.do(t, tc.method, tc.path, tc.body)
			e.wantStatus(t, r, http.StatusBadRequest)
			b := r.errorBody(t)
			if b.Code != "invalid" || b.Field != tc.field {
				t.Fatalf("want field %q: %s", tc.field, r.body)
			}
		})
	}
	r := e.do(t, "GET", "/v1/workspaces/delta/events", "")
	var h struct{ Events []api.Event }
	r.decode(t, &h)
	if len(h.Events) != 1 {
		t.Fatalf("delta has %d events after refused requests: %s", len(h.Events), r.body)
	}
	e.wantStatus(t, e.do(t, "GET", "/v1/workspaces/qp1/events", ""), http.StatusNotFound)
	var l api.WebhookList
	e.do(t, "GET", "/v1/webhooks", "").decode(t, &l)
	if len(l.Webhooks) != 0 {
		t.Fatalf("refused adds left %+v", l.Webhooks)
	}
	// Whitespace alone is no body: the command is taken.
	e.wantStatus(t, e.do(t, "POST", "/v1/workspaces/delta/stop", " \n"), http.StatusAccepted)
}
