package main

import (
	"context"
	"encoding/json"
	"maps"
	"net"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/turnstile-dev/turnstile/api"
	"github.com/turnstile-dev/turnstile/webhook"
)

// The webhook signing secrets are serve's alone: neither the user role
// nor the admin role of the embedded NATS can read the bucket that holds
// them (stream info, direct and message gets, a watch, a consumer), and
// the CLI manages webhooks over the HTTP API.
func TestWebhookSecretsOutOfNATSRoles(t *testing.T) {
	s := startInProcessServe(t, map[string]string{"TURNSTILE_WEBHOOK_ALLOW_PRIVATE": "true"})
	env := maps.Clone(s.env)
	env["TURNSTILE_API_URL"] = s.httpURL
	code, out, errOut := runCLI(t, env, "webhook", "add", "http://127.0.0.1:9/hook", "--events", "created,provisioned")
	if code != 0 {
		t.Fatalf("webhook add: exit %d\n%s%s", code, out, errOut)
	}
	id := regexp.MustCompile(`wh-[0-9a-f]{16}`).FindString(out)
	secret := regexp.MustCompile(`whsec_\S+`).FindString(out)
	if id == "" || secret == "" {
		t.Fatalf("webhook add printed no id or secret:\n%s", out)
	}
	code, out, errOut = runCLI(t, env, "webhook", "list")
	if code != 0 || !strings.Contains(out, id) || strings.Contains(out, secret) {
		t.Fatalf("webhook list: exit %d\n%s%s", code, out, errOut)
	}
	if code, _, errOut := runCLI(t, env, "webhook", "add", "ftp://x.example.com/"); code != exitUsage || !strings.Contains(errOut, "scheme") {
		t.Fatalf("webhook add ftp://: exit %d %s", code, errOut)
	}

	admin, err := nats.NkeyOptionFromSeed(filepath.Join(s.dir, natsAdminNkeyFile))
	if err != nil {
		t.Fatal(err)
	}
	for role, cred := range map[string]nats.Option{"user": nats.Token(s.token(t)), "admin": admin} {
		t.Run(role, func(t *testing.T) {
			errs := make(chan error, 64)
			nc, err := nats.Connect(s.natsURL, cred, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
				select {
				case errs <- err:
				default:
				}
			}))
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			js, err := jetstream.New(nc)
			if err != nil {
				t.Fatal(err)
			}
			for _, tc := range []struct {
				name, subject string
				do            func(context.Context) error
			}{
				{"BucketInfo", "$JS.API.STREAM.INFO.KV_TURNSTILE_WEBHOOKS", func(ctx context.Context) error {
					_, err := js.KeyValue(ctx, "TURNSTILE_WEBHOOKS")
					return err
				}},
				{"DirectGet", "$JS.API.DIRECT.GET.KV_TURNSTILE_WEBHOOKS.$KV.TURNSTILE_WEBHOOKS." + id, func(ctx context.Context) error {
					_, err := nc.RequestWithContext(ctx, "$JS.API.DIRECT.GET.KV_TURNSTILE_WEBHOOKS.$KV.TURNSTILE_WEBHOOKS."+id, nil)
					return err
				}},
				{"MsgGet", "$JS.API.STREAM.MSG.GET.KV_TURNSTILE_WEBHOOKS", func(ctx context.Context) error {
					_, err := nc.RequestWithContext(ctx, "$JS.API.STREAM.MSG.GET.KV_TURNSTILE_WEBHOOKS", []byte(`{"last_by_subj":"$KV.TURNSTILE_WEBHOOKS.`+id+`"}`))
					return err
				}},
				{"Consumer", "$JS.API.CONSUMER.CREATE.KV_TURNSTILE_WEBHOOKS", func(ctx context.Context) error {
					return nc.PublishRequest("$JS.API.CONSUMER.CREATE.KV_TURNSTILE_WEBHOOKS", nc.NewRespInbox(),
						[]byte(`{"stream_name":"KV_TURNSTILE_WEBHOOKS","config":{"ack_policy":"none","deliver_policy":"all"}}`))
				}},
				{"Watch", "$KV.TURNSTILE_WEBHOOKS.>", func(context.Context) error {
					_, err := nc.Subscribe("$KV.TURNSTILE_WEBHOOKS.>", func(*nats.Msg) {})
					return err
				}},
			} {
				t.Run(tc.name, func(t *testing.T) {
					ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
					defer cancel()
					_ = tc.do(ctx)
					waitViolation(t, errs, tc.subject)
				})
			}
		})
	}

	if code, out, errOut := runCLI(t, env, "webhook", "rm", id); code != 0 || !strings.Contains(out, "removed") {
		t.Fatalf("webhook rm: exit %d\n%s%s", code, out, errOut)
	}
	if code, _, errOut := runCLI(t, env, "webhook", "rm", id); code != exitRejected {
		t.Fatalf("second webhook rm: exit %d %s", code, errOut)
	}
}

// The webhook commands speak only to serve's API: an API that does not
// answer is named with how to point the CLI elsewhere, and an API URL
// that is not http(s)://HOST is a usage error before anything is sent.
func TestWebhookCommandsWithoutAnAPI(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + l.Addr().String()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"TURNSTILE_API_URL": closed, "TURNSTILE_API_TOKEN": "x"}
	code, _, errOut := runCLI(t, env, "webhook", "list")
	if code != exitError || !strings.Contains(errOut, "cannot reach serve's API at "+closed) || !strings.Contains(errOut, "--api-url") {
		t.Errorf("webhook list against a closed port: exit %d, stderr %q", code, errOut)
	}
	if strings.Contains(errOut, "clear text") {
		t.Errorf("a loopback API URL warned of a token in clear text: %q", errOut)
	}
	// 0.0.0.0 is not loopback by name, and a connection to it is refused
	// at once here: the warning is the webhook commands' too.
	env["TURNSTILE_API_URL"] = strings.Replace(closed, "127.0.0.1", "0.0.0.0", 1)
	if _, _, errOut = runCLI(t, env, "webhook", "list"); !strings.Contains(errOut, "clear text") {
		t.Errorf("webhook list over plain HTTP beyond loopback: no warning in %q", errOut)
	}
	env["TURNSTILE_API_URL"] = "localhost:8080"
	code, _, errOut = runCLI(t, env, "webhook", "list")
	if code != exitUsage || !strings.Contains(errOut, "http://") {
		t.Errorf("webhook list with an API URL without a scheme: exit %d, stderr %q", code, errOut)
	}
}

// TestWebhookAddEchoInert: `webhook add` echoes the URL serve stored,
// which is the user's text: a bidi control or a C1 CSI in its path
// passes serve's checks (url.Parse takes them), and the echo wrote them
// raw, reordering or rewriting the operator's line. It writes them
// escaped now, as the list's table does.
func TestWebhookAddEchoInert(t *testing.T) {
	hook := "http://127.0.0.1:9/\u202ekooh\u202c/\u009b2J"
	fake := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request) {
		var req api.WebhookRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			t.Error(err)
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		_ = json.NewEncoder(w).Encode(webhook.Webhook{ID: "wh-0123456789abcdef", URL: req.URL, Secret: "whsec_x", Created: time.Now()})
	})
	code, out, errOut := runCLI(t, fake.env(t), "webhook", "add", hook)
	if code != 0 {
		t.Fatalf("webhook add: exit %d\n%s%s", code, out, errOut)
	}
	noUnsafe(t, "webhook add", out)
	if !strings.Contains(out, `/\u202ekooh\u202c/\u009b2J`) {
		t.Errorf("webhook add: %q does not show the URL escaped", out)
	}
}
