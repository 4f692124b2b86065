package api_test

import (
	"context"
	"github.com/nats-io/nats.go/jetstream"
	"net/http"
	"strings"
	"testing"

	"github.com/turnstile-dev/turnstile/api"
	"github.com/turnstile-dev/turnstile/webhook"
)

// /v1/webhooks adds (the secret shown once), lists (never the secret)
// and removes webhooks; bad input is a 400 naming the field and changes
// nothing.
func TestWebhookRoutes(t *testing.T) {
	e := newEnv(t, envOptions{noReadModel: true, configure: func(c *api.Config) {
		js, err := jetstream.New(c.NC)
		if err != nil {
			t.Fatal(err)
		}
		reg, err := webhook.OpenRegistry(context.Background(), js, c.Store, webhook.RegistryOptions{Memory: true})
		if err != nil {
			t.Fatal(err)
		}
		c.Webhooks = reg
	}})

	t.Run("BadInput", func(t *testing.T) {
		for _, tc := range []struct{ body, field, msg string }{
			{`{"url":"http://127.0.0.1:9000/hook"}`, "url",
				"url: 127.0.0.1: webhook destination is not a public address (serve's --webhook-allow-private allows it)"},
			{`{"url":"https://user:pw@hooks.example.com/"}`, "url", ""},
			{`{"url":"file:///etc/passwd"}`, "url", ""},
			{`{"url":"https://hooks.example.com/","events":["workspace.nope"]}`, "events", ""},
			{`{"url":"https://hooks.example.com/","secret":"mine"}`, "secret", ""},
			{`{}`, "url", ""},
			// Past the stream's end: the webhook would skip every event
			// up to it.
			{`{"url":"https://hooks.example.com/","since":999999}`, "since", "since: 999999 is past the event stream's last sequence, "},
		} {
			r := e.do(t, "POST", "/v1/webhooks", tc.body)
			e.wantStatus(t, r, http.StatusBadRequest)
			if b := r.errorBody(t); b.Field != tc.field || b.Code != "invalid" || !strings.Contains(b.Message, tc.msg) {
				t.Fatalf("%s: %+v, want field %s and %q", tc.body, b, tc.field, tc.msg)
			}
		}
		var l api.WebhookList
		e.do(t, "GET", "/v1/webhooks", "").decode(t, &l)
		if len(l.Webhooks) != 0 {
			t.Fatalf("refused adds left %+v", l)
		}
	})

	var added webhook.Webhook
	t.Run("Add", func(t *testing.T) {
		r := e.do(t, "POST", "/v1/webhooks", `{"url":"https://hooks.example.com/turnstile","events":["workspace.created"],"since":0}`)
		e.wantStatus(t, r, http.StatusCreated)
		r.decode(t, &added)
		if !strings.HasPrefix(added.Secret, "whsec_") || r.header.Get("Location") != "/v1/webhooks/"+added.ID {
			t.Fatalf("added: %s (Location %q)", r.body, r.header.Get("Location"))
		}
	})

	t.Run("ListHidesSecret", func(t *testing.T) {
		r := e.do(t, "GET", "/v1/webhooks", "")
		e.wantStatus(t, r, http.StatusOK)
		var l api.WebhookList
		r.decode(t, &l)
		if len(l.Webhooks) != 1 || l.Webhooks[0].ID != added.ID || strings.Contains(string(r.body), added.Secret) {
			t.Fatalf("list: %s", r.body)
		}
	})

	t.Run("Remove", func(t *testing.T) {
		e.wantStatus(t, e.do(t, "DELETE", "/v1/webhooks/not-an-id", ""), http.StatusBadRequest)
		e.wantStatus(t, e.do(t, "DELETE", "/v1/webhooks/wh-0000000000000000", ""), http.StatusNotFound)
		e.wantStatus(t, e.do(t, "DELETE", "/v1/webhooks/"+added.ID, ""), http.StatusNoContent)
		e.wantStatus(t, e.do(t, "DELETE", "/v1/webhooks/"+added.ID, ""), http.StatusNotFound)
		var l api.WebhookList
		e.do(t, "GET", "/v1/webhooks", "").decode(t, &l)
		if len(l.Webhooks) != 0 {
			t.Fatalf("after remove: %+v", l)
		}
	})

	t.Run("Unauthorized", func(t *testing.T) {
		r := e.do(t, "GET", "/v1/webhooks", "", "Authorization", "Bearer wrong-token-0123456789abcdefghijklmnop")
		e.wantStatus(t, r, http.StatusUnauthorized)
	})
}

// Without a registry the routes say so.
func TestWebhookRoutesUnconfigured(t *testing.T) {
	e := newEnv(t, envOptions{noReadModel: true})
	e.wantStatus(t, e.do(t, "GET", "/v1/webhooks", ""), http.StatusServiceUnavailable)
	e.wantStatus(t, e.do(t, "POST", "/v1/webhooks", `{"url":"https://hooks.example.com/"}`), http.StatusServiceUnavailable)
}
