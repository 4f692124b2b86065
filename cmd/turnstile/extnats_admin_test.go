package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/conf"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/internal/testenv"
)

const (
	adminPassword = "admin-password-for-the-test"
	// docInstallation is the installation id docs/operations.md's example
	// names; serve runs with it, so the worker's durable is the one the
	// page's admin user is denied.
	docInstallation = "ts-0123abcd"
)

// TestDocumentedNATSAdmin runs the admin user docs/operations.md describes
// in prose for its --nats-url configuration (the user block's permissions,
// plus consumer creates and pulls, minus serve's durables), added to the
// documented configuration: rebuild works under it, and it can neither
// create, redefine nor pull from serve's durables (the engine's partition
// consumers, the worker's, the partitions claim) through any create
// subject, nor reach the webhook or keys buckets.
func TestDocumentedNATSAdmin(t *testing.T) {
	doc, err := os.ReadFile("../../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	n := events.NewNames("")
	allow, deny, sub := documentedAdminPermissions(t, documentedNATSConfig(t), string(doc), n)
	// The page's admin is the embedded server's admin role.
	_, embedded := rolePermissions(n, serveDurables(n, docInstallation))
	for what, lists := range map[string][2][]string{
		"publish allow": {allow, embedded.Publish.Allow}, "publish deny": {deny, embedded.Publish.Deny},
		"subscribe allow": {sub, embedded.Subscribe.Allow},
	} {
		if d, e := sortedSet(lists[0]), sortedSet(lists[1]); !slices.Equal(d, e) {
			t.Errorf("the documented admin's %s differs from the embedded admin role's:\n only documented: %v\n only embedded: %v",
				what, without(d, e), without(e, d))
		}
	}
	adminEntry := adminUserEntry(t, allow, deny, sub)

	cfg := strings.ReplaceAll(documentedNATSConfig(t), `"/var/lib/nats"`, `"`+t.TempDir()+`"`)
	const userEntry = "{ user: turnstile-user,"
	if strings.Count(cfg, userEntry) != 1 {
		t.Fatalf("the documented configuration has no single %q:\n%s", userEntry, cfg)
	}
	cfg = strings.Replace(cfg, userEntry, adminEntry+"\n      "+userEntry, 1)
	url := startConfiguredNATS(t, cfg)
	dbURL := testenv.StartPostgres(t).NewDatabase(t)
	s := startInProcessServe(t, map[string]string{"TURNSTILE_NATS_URL": url, "TURNSTILE_NATS_USER": "turnstile-serve",
		"TURNSTILE_NATS_PASSWORD": servePassword, "TURNSTILE_DATABASE_URL": dbURL, "TURNSTILE_INSTALLATION": docInstallation,
		"TURNSTILE_WEBHOOK_ALLOW_PRIVATE": "true"})
	signIn := func(user, password string) map[string]string {
		return map[string]string{"TURNSTILE_NATS_URL": url, "TURNSTILE_NATS_USER": user, "TURNSTILE_NATS_PASSWORD": password,
			"TURNSTILE_DATA_DIR": t.TempDir(), "TURNSTILE_DATABASE_URL": dbURL}
	}
	userEnv, adminEnv := signIn("turnstile-user", userPassword), signIn("turnstile-admin", adminPassword)
	cli := func(t *testing.T, env map[string]string, args ...string) string {
		t.Helper()
		code, out, errs := runCLI(t, env, args...)
		if code != 0 {
			t.Fatalf("%v: exit %d\n%s%s", args, code, out, errs)
		}
		return out
	}
	cli(t, userEnv, "create", "before", "--wait")
	// A webhook, so that its bucket holds a signing secret.
	apiEnv := maps.Clone(s.env)
	apiEnv["TURNSTILE_API_URL"] = s.httpURL
	hook := regexp.MustCompile(`wh-[0-9a-f]{16}`).FindString(cli(t, apiEnv, "webhook", "add", "http://127.0.0.1:9/hook", "--events", "created"))
	if hook == "" {
		t.Fatal("webhook add printed no id")
	}

	t.Run("Rebuild", func(t *testing.T) {
		out := cli(t, adminEnv, "rebuild", "-o", "json")
		var st struct{ Workspaces, Events int }
		if err := json.Unmarshal([]byte(out), &st); err != nil || st.Workspaces < 1 || st.Events < 1 {
			t.Fatalf("rebuild under the documented admin: %v\n%s", err, out)
		}
		if out := cli(t, userEnv, "get", "before"); !strings.Contains(out, "running") {
			t.Fatalf("get after the rebuild:\n%s", out)
		}
	})

	nc, errs := connectCollecting(t, url, "turnstile-admin", adminPassword)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	t.Run("ServeDurables", func(t *testing.T) {
		type durable struct{ stream, name, filter string }
		var durables []durable
		for _, stream := range []string{n.CommandStream(), n.SystemStream()} {
			filter := strings.TrimSuffix(map[string]string{n.CommandStream(): n.Commands(), n.SystemStream(): n.Systems()}[stream], ">") + "nothing"
			for _, name := range []string{events.EngineConsumer(engineDurable, 0), events.EngineConsumer(engineDurable, events.MaxPartitions-1)} {
				durables = append(durables, durable{stream, name, filter})
			}
		}
		durables = append(durables,
			durable{n.EventStream(), workerDurable(docInstallation), strings.TrimSuffix(n.Events(), ">") + "nothing"},
			durable{n.CommandStream(), events.PartitionsClaim, strings.TrimSuffix(n.Commands(), ">") + "nothing"})
		// What each is before: its configuration, or absent.
		state := func(d durable) string {
			c, err := js.Consumer(ctx, d.stream, d.name)
			if errors.Is(err, jetstream.ErrConsumerNotFound) {
				return "absent"
			}
			if err != nil {
				t.Fatalf("consumer info %s %s: %v", d.stream, d.name, err)
			}
			b, _ := json.Marshal(c.CachedInfo().Config)
			return string(b)
		}
		before := map[durable]string{}
		for _, d := range durables {
			before[d] = state(d)
		}
		if before[durables[0]] == "absent" || before[durables[len(durables)-2]] == "absent" {
			t.Fatalf("serve's engine consumer or worker is absent: %v", before)
		}
		for _, d := range durables {
			body := func(action string) []byte {
				b, _ := json.Marshal(map[string]any{"stream_name": d.stream, "action": action, "config": map[string]any{
					"name": d.name, "durable_name": d.name, "filter_subject": d.filter, "ack_policy": "explicit"}})
				return b
			}
			legacy := "$JS.API.CONSUMER.CREATE." + d.stream
			named := legacy + "." + d.name
			for _, probe := range []struct{ name, subject, action string }{
				{"LegacyCreate", legacy, ""},
				{"LegacyUpdate", legacy, "update"},
				{"NamedCreate", named, ""},
				{"NamedCreateFiltered", named + "." + d.filter, ""},
				{"DurableCreate", "$JS.API.CONSUMER.DURABLE.CREATE." + d.stream + "." + d.name, ""},
				{"Pull", "$JS.API.CONSUMER.MSG.NEXT." + d.stream + "." + d.name, "pull"},
			} {
				t.Run(d.name+"/"+d.stream+"/"+probe.name, func(t *testing.T) {
					msg := body(probe.action)
					if probe.action == "pull" {
						msg = []byte(`{"batch":1,"expires":1000000000}`)
					}
					if err := nc.PublishRequest(probe.subject, nc.NewRespInbox(), msg); err != nil {
						t.Fatal(err)
					}
					waitViolationOn(t, errs, probe.subject)
				})
			}
			// A subject naming a consumer of its own, the request naming
			// serve's: the server goes by the subject.
			resp, err := nc.Request("$JS.API.CONSUMER.CREATE."+d.stream+".mine-"+d.name, body(""), 10*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(string(resp.Data), `"name":"`+d.name+`"`) {
				t.Errorf("a create named mine-%s in the subject made %s: %s", d.name, d.name, resp.Data)
			}
			// Through the client's own calls too (a named create).
			cctx, ccancel := context.WithTimeout(ctx, 3*time.Second)
			_, err = js.CreateOrUpdateConsumer(cctx, d.stream, jetstream.ConsumerConfig{Durable: d.name, FilterSubject: d.filter})
			ccancel()
			if err == nil {
				t.Errorf("the documented admin created or updated %s on %s", d.name, d.stream)
			}
			waitViolationOn(t, errs, "$JS.API.CONSUMER.CREATE."+d.stream+"."+d.name+"."+d.filter)
		}
		// The server answers a permitted request at once: a change not
		// seen by now was not made.
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
		for _, d := range durables {
			if after := state(d); after != before[d] {
				t.Errorf("the documented admin changed %s on %s:\n was %s\n now %s", d.name, d.stream, before[d], after)
			}
		}
		// A consumer of its own, named in the subject, it may make and pull.
		c, err := js.CreateOrUpdateConsumer(ctx, n.EventStream(), jetstream.ConsumerConfig{Name: "mine", AckPolicy: jetstream.AckNonePolicy})
		if err != nil {
			t.Fatalf("the documented admin's own consumer: %v", err)
		}
		if _, err := c.Next(jetstream.FetchMaxWait(10 * time.Second)); err != nil {
			t.Fatalf("the documented admin's pull from its own consumer: %v", err)
		}
		// The engine still decides commands: its consumers are intact.
		cli(t, userEnv, "create", "after", "--wait")
	})

	t.Run("Buckets", func(t *testing.T) {
		for _, bucket := range []string{n.Prefix + "_WEBHOOKS", keysBucket(n)} {
			bucket = strings.ToUpper(bucket)
			stream := "KV_" + bucket
			key := "$KV." + bucket + "." + hook
			for _, probe := range []struct{ name, subject, body string }{
				{"Info", "$JS.API.STREAM.INFO." + stream, ""},
				{"DirectGet", "$JS.API.DIRECT.GET." + stream + "." + key, ""},
				{"DirectGetBatch", "$JS.API.DIRECT.GET." + stream, `{"multi_last":["$KV.` + bucket + `.>"],"batch":100}`},
				{"MsgGet", "$JS.API.STREAM.MSG.GET." + stream, `{"last_by_subj":"` + key + `"}`},
				{"LegacyConsumer", "$JS.API.CONSUMER.CREATE." + stream, `{"stream_name":"` + stream + `","config":{"ack_policy":"none","deliver_policy":"all"}}`},
				{"NamedConsumer", "$JS.API.CONSUMER.CREATE." + stream + ".mine", `{"stream_name":"` + stream + `","config":{"name":"mine","ack_policy":"none"}}`},
				{"ConsumerList", "$JS.API.CONSUMER.LIST." + stream, ""},
				{"Put", key, `{}`},
			} {
				t.Run(bucket+"/"+probe.name, func(t *testing.T) {
					if err := nc.PublishRequest(probe.subject, nc.NewRespInbox(), []byte(probe.body)); err != nil {
						t.Fatal(err)
					}
					waitViolationOn(t, errs, probe.subject)
				})
			}
			t.Run(bucket+"/Watch", func(t *testing.T) {
				if _, err := nc.Subscribe("$KV."+bucket+".>", func(*nats.Msg) {}); err != nil {
					t.Fatal(err)
				}
				waitViolationOn(t, errs, "$KV."+bucket+".>")
			})
			t.Run(bucket+"/Open", func(t *testing.T) {
				kctx, kcancel := context.WithTimeout(ctx, 3*time.Second)
				defer kcancel()
				if _, err := js.KeyValue(kctx, bucket); err == nil {
					t.Fatalf("the documented admin opened the bucket %s", bucket)
				}
			})
		}
	})
}

// documentedAdminPermissions builds the admin user's permissions as
// docs/operations.md's prose says: the user block's (parsed from the
// documented configuration), plus, in allow, each stream's named consumer
// creates and pulls, and in deny, instead of the user's last line (its
// creates and pulls), each stream's legacy create and, for each of serve's
// durables, its named creates and its pull. Every subject form it adds is
// checked to be in the prose, so the test follows the page.
func documentedAdminPermissions(t *testing.T, cfg, doc string, n events.Names) (allow, deny, sub []string) {
	t.Helper()
	m, err := conf.Parse(cfg)
	if err != nil {
		t.Fatalf("the documented configuration: %v", err)
	}
	user := findUser(t, m, "TURNSTILE_USERS", "turnstile-user")
	perms, _ := user["permissions"].(map[string]any)
	pub, _ := perms["publish"].(map[string]any)
	subp, _ := perms["subscribe"].(map[string]any)
	allow, deny, sub = stringList(t, pub["allow"]), stringList(t, pub["deny"]), stringList(t, subp["allow"])
	if len(allow) == 0 || len(deny) < 2 || len(sub) == 0 {
		t.Fatalf("the documented user's permissions: %v", perms)
	}
	// "instead of the last line": the user's consumer creates and pulls.
	if last := deny[len(deny)-2:]; !slices.Equal(last, []string{"$JS.API.CONSUMER.CREATE.>", "$JS.API.CONSUMER.MSG.NEXT.>"}) {
		t.Fatalf("the documented user's deny ends with %v, not the creates and pulls the admin's replaces", last)
	}
	deny = deny[:len(deny)-2]

	i := strings.Index(doc, "The admin user, in `TURNSTILE_USERS` too")
	if i < 0 {
		t.Fatal("docs/operations.md has no paragraph on the admin user")
	}
	prose := doc[i:]
	prose = strings.Join(strings.Fields(prose[:strings.Index(prose, "\n\n")]), " ")
	mentioned := func(s string) {
		t.Helper()
		if !strings.Contains(prose, s) {
			t.Fatalf("the admin user's paragraph does not say %s:\n%s", s, prose)
		}
	}
	for _, s := range []string{
		"`\"$JS.API.CONSUMER.CREATE.<stream>.>\"`", "`\"$JS.API.CONSUMER.MSG.NEXT.<stream>.*\"`", "`\"$JS.API.CONSUMER.CREATE.<stream>\"`",
		"`turnstile-engine-p00` … `turnstile-engine-p63`",
		"`\"$JS.API.CONSUMER.CREATE.TURNSTILE_COMMANDS.turnstile-engine-p00\"`",
		"`\"$JS.API.CONSUMER.CREATE.TURNSTILE_COMMANDS.turnstile-engine-p00.>\"`",
		"`\"$JS.API.CONSUMER.MSG.NEXT.TURNSTILE_COMMANDS.turnstile-engine-p00\"`",
		"the same three for `TURNSTILE_SYSTEM`", "for `TURNSTILE_EVENTS` with `turnstile-worker-" + docInstallation + "`",
		"for `TURNSTILE_COMMANDS` with `turnstile-partitions-claim`",
	} {
		mentioned(s)
	}
	var engineConsumers []string
	for k := range 64 {
		engineConsumers = append(engineConsumers, fmt.Sprintf("turnstile-engine-p%02d", k))
	}
	durables := map[string][]string{
		n.CommandStream(): append(slices.Clone(engineConsumers), "turnstile-partitions-claim"),
		n.SystemStream():  engineConsumers,
		n.EventStream():   {"turnstile-worker-" + docInstallation},
	}
	for _, stream := range []string{n.CommandStream(), n.SystemStream(), n.EventStream()} {
		allow = append(allow, "$JS.API.CONSUMER.CREATE."+stream+".>", "$JS.API.CONSUMER.MSG.NEXT."+stream+".*")
		deny = append(deny, "$JS.API.CONSUMER.CREATE."+stream)
		for _, d := range durables[stream] {
			deny = append(deny, "$JS.API.CONSUMER.CREATE."+stream+"."+d, "$JS.API.CONSUMER.CREATE."+stream+"."+d+".>",
				"$JS.API.CONSUMER.MSG.NEXT."+stream+"."+d)
		}
	}
	return allow, deny, sub
}

// adminUserEntry is the admin user's entry for the users list of the
// documented configuration (JSON is nats-server configuration too).
func adminUserEntry(t *testing.T, allow, deny, sub []string) string {
	t.Helper()
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false) // nats-server reads no \u escapes (of > in subjects)
	if err := enc.Encode(map[string]any{"user": "turnstile-admin", "password": adminPassword, "permissions": map[string]any{
		"publish": map[string]any{"allow": allow, "deny": deny}, "subscribe": map[string]any{"allow": sub}}}); err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(b.String())
}

// findUser is the entry of user in account's users of a parsed
// nats-server configuration.
func findUser(t *testing.T, m map[string]any, account, user string) map[string]any {
	t.Helper()
	accounts, _ := m["accounts"].(map[string]any)
	acc, _ := accounts[account].(map[string]any)
	users, _ := acc["users"].([]any)
	for _, u := range users {
		if u, ok := u.(map[string]any); ok && u["user"] == user {
			return u
		}
	}
	t.Fatalf("the documented configuration has no user %s in %s", user, account)
	return nil
}

func stringList(t *testing.T, v any) []string {
	t.Helper()
	l, _ := v.([]any)
	var out []string
	for _, s := range l {
		s, ok := s.(string)
		if !ok {
			t.Fatalf("not a list of subjects: %v", v)
		}
		out = append(out, s)
	}
	return out
}

func sortedSet(l []string) []string {
	l = slices.Clone(l)
	slices.Sort(l)
	return slices.Compact(l)
}

// without is what a has and b has not.
func without(a, b []string) []string {
	return slices.DeleteFunc(slices.Clone(a), func(s string) bool { return slices.Contains(b, s) })
}

// connectCollecting connects as user and collects the server's
// asynchronous errors (permission violations).
func connectCollecting(t *testing.T, url, user, password string) (*nats.Conn, chan error) {
	t.Helper()
	return connectWithErrors(t, url, nats.UserInfo(user, password))
}

// waitViolationOn waits for a permission violation on exactly subject
// (waitViolation takes any subject containing it: the legacy create's is
// in every named create's); the error quotes the subject.
func waitViolationOn(t *testing.T, errs chan error, subject string) {
	t.Helper()
	waitViolation(t, errs, `"`+subject+`"`)
}
