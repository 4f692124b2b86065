package e2e_test

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/turnstile-dev/turnstile/api"
	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/internal/testenv"
	"github.com/turnstile-dev/turnstile/webhook"
)

// hookReceiver is a webhook endpoint that can answer 503 or be down
// altogether (its port closed) and come back on the same address.
type hookReceiver struct {
	t      *testing.T
	addr   string
	secret string
	mu     sync.Mutex
	fail   bool
	tries  int
	got    []webhook.Delivery
	bad    []string
	srv    *http.Server
	done   chan struct{}
}

func newHookReceiver(t *testing.T, fail bool) *hookReceiver {
	r := &hookReceiver{t: t, fail: fail, addr: "127.0.0.1:0"}
	r.up()
	t.Cleanup(r.down)
	return r
}

func (r *hookReceiver) url() string { return "http://" + r.addr + "/hook" }

func (r *hookReceiver) up() {
	r.t.Helper()
	ln, err := net.Listen("tcp", r.addr)
	if err != nil {
		r.t.Fatal(err)
	}
	r.addr = ln.Addr().String()
	r.srv = &http.Server{Handler: r, ReadHeaderTimeout: 10 * time.Second}
	r.done = make(chan struct{})
	go func() {
		defer close(r.done)
		_ = r.srv.Serve(ln)
	}()
}

func (r *hookReceiver) down() {
	if r.srv != nil {
		_ = r.srv.Close()
		<-r.done
		r.srv = nil
	}
}

func (r *hookReceiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(req.Body)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.tries++
	if r.fail || err != nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	if err := webhook.Verify(r.secret, req.Header.Get(webhook.HeaderSignature), body, 5*time.Minute, time.Now()); err != nil {
		r.bad = append(r.bad, err.Error())
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	var d webhook.Delivery
	if err := json.Unmarshal(body, &d); err != nil {
		r.bad = append(r.bad, err.Error())
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	r.got = append(r.got, d)
	w.WriteHeader(http.StatusOK)
}

func (r *hookReceiver) set(fail bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.fail = fail
}

func (r *hookReceiver) setSecret(s string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.secret = s
}

func (r *hookReceiver) attempts() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.tries
}

// events are the events accepted, repeats (same delivery id) dropped.
func (r *hookReceiver) events(t *testing.T) []api.Event {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.bad) > 0 {
		t.Fatalf("deliveries that did not verify: %v", r.bad)
	}
	var out []api.Event
	seen := map[string]bool{}
	for _, d := range r.got {
		if seen[d.ID] {
			continue
		}
		seen[d.ID] = true
		b, _ := json.Marshal(d.Event)
		var ev api.Event
		if err := json.Unmarshal(b, &ev); err != nil || ev.StreamSeq != d.StreamSeq || ev.Type != d.Type {
			t.Fatalf("delivery %s: %s (%v)", d.ID, b, err)
		}
		out = append(out, ev)
	}
	return out
}

func hookCLI() string { return filepath.Join(binDir, "turnstile") }

var (
	webhookIDPattern     = regexp.MustCompile(`wh-[0-9a-f]{16}`)
	webhookSecretPattern = regexp.MustCompile(`whsec_\S+`)
)

// addWebhook runs `turnstile webhook add` and returns the id and secret.
func addWebhook(t *testing.T, srv *server, env []string, args ...string) (string, string) {
	t.Helper()
	r := runIn(t, srv.dir, env, append([]string{hookCLI(), "webhook", "add"}, args...)...)
	want(t, r, 0, "webhook add")
	id, secret := webhookIDPattern.FindString(r.stdout), webhookSecretPattern.FindString(r.stdout)
	if id == "" || secret == "" {
		t.Fatalf("webhook add printed no id or secret: %s", r)
	}
	return id, secret
}

// allEvents are the stream's events, from GET /v1/events.
func allEvents(t *testing.T, srv *server) []api.Event {
	t.Helper()
	status, body := srv.httpDo(t, "GET", "/v1/events?limit=1000", "", "")
	var p api.Page
	if status != http.StatusOK || json.Unmarshal(body, &p) != nil {
		t.Fatalf("GET /v1/events: %d %s", status, body)
	}
	return p.Events
}

func streamSeqs(evs []api.Event) []uint64 {
	var out []uint64
	for _, e := range evs {
		out = append(out, e.StreamSeq)
	}
	return out
}

// TestWebhookThroughReceiverOutage: a receiver answers 503, then is down
// altogether while serve restarts; when it is back it gets every event
// since `webhook add`, in stream order, no gaps, each signed and with its
// cause. Another webhook, filtered to creates, gets only those; after
// `webhook rm` the removed one gets nothing more. Issue 14 item 4.
func TestWebhookThroughReceiverOutage(t *testing.T) {
	args := []string{"--provisioner", "sim", "--sim-min-latency", "0s", "--sim-max-latency", "50ms", "--webhook-allow-private"}
	srv := startServe(t, serveOptions{args: args})
	env := append(srv.clientEnv(), "TURNSTILE_API_URL="+srv.httpURL())

	down := newHookReceiver(t, true)
	creates := newHookReceiver(t, false)
	downID, downSecret := addWebhook(t, srv, env, down.url())
	down.setSecret(downSecret)
	createsID, createsSecret := addWebhook(t, srv, env, creates.url(), "--events", "created")
	creates.setSecret(createsSecret)
	r := runIn(t, srv.dir, env, hookCLI(), "webhook", "list")
	want(t, r, 0, "webhook list")
	if !strings.Contains(r.stdout, downID) || !strings.Contains(r.stdout, createsID) || strings.Contains(r.stdout, "whsec_") {
		t.Fatalf("webhook list: %s", r)
	}

	want(t, srv.turnstile(t, "create", "hook-a", "--wait", "--timeout", "60s"), 0, "create hook-a")
	testenv.Eventually(t, time.Minute, "503s to be retried", func() bool { return down.attempts() >= 2 })
	down.down()
	if code := srv.terminate(time.Minute); code != 0 {
		t.Fatalf("serve exited %d after SIGTERM:\n%s", code, srv.stderr)
	}
	srv = startServe(t, serveOptions{args: args, dir: srv.dir, natsPort: srv.natsPort, httpPort: srv.httpPort})
	want(t, srv.turnstile(t, "create", "hook-b", "--wait", "--timeout", "60s"), 0, "create hook-b")
	want(t, srv.turnstile(t, "stop", "hook-a", "--wait", "--timeout", "60s"), 0, "stop hook-a")

	down.set(false)
	down.up()
	all := allEvents(t, srv)
	if len(all) < 6 {
		t.Fatalf("events: %+v", all)
	}
	testenv.Eventually(t, time.Minute, "every event since the add", func() bool { return len(down.events(t)) >= len(all) })
	got := down.events(t)
	if !slices.Equal(streamSeqs(got), streamSeqs(all)) {
		t.Fatalf("delivered stream sequences %v, want %v (in order, no gaps)", streamSeqs(got), streamSeqs(all))
	}
	for i, ev := range got {
		if ev.Type != all[i].Type || ev.Workspace != all[i].Workspace || ev.Cause != all[i].Cause || ev.From != all[i].From {
			t.Fatalf("delivery %d: %+v, want %+v", i, ev, all[i])
		}
	}
	if got[0].Type != fsm.Created || got[0].Cause.Kind != "user" || got[1].Cause.Kind != "system" {
		t.Fatalf("causes: %+v, %+v", got[0], got[1])
	}
	testenv.Eventually(t, time.Minute, "both creates at the filtered webhook", func() bool { return len(creates.events(t)) == 2 })
	for _, ev := range creates.events(t) {
		if ev.Type != fsm.Created {
			t.Fatalf("the creates-only webhook got %+v", ev)
		}
	}

	want(t, runIn(t, srv.dir, env, hookCLI(), "webhook", "rm", downID), 0, "webhook rm")
	r = runIn(t, srv.dir, env, hookCLI(), "webhook", "list", "-o", "json")
	want(t, r, 0, "webhook list")
	var list []webhook.Info
	if err := json.Unmarshal([]byte(r.stdout), &list); err != nil || len(list) != 1 || list[0].ID != createsID {
		t.Fatalf("webhook list after rm: %s (%v)", r, err)
	}
	before := len(down.events(t))
	want(t, srv.turnstile(t, "create", "hook-c", "--wait", "--timeout", "60s"), 0, "create hook-c")
	testenv.Eventually(t, time.Minute, "the third create at the remaining webhook", func() bool { return len(creates.events(t)) == 3 })
	if n := len(down.events(t)); n != before {
		t.Fatalf("the removed webhook got %d more deliveries", n-before)
	}
	r = runIn(t, srv.dir, env, hookCLI(), "webhook", "rm", downID)
	if r.code != 3 {
		t.Fatalf("rm of a removed webhook: %s", r)
	}
}
