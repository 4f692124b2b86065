package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
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
		_, err = st.GetLastMsgForSubject(ctx, subject)
		if err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
			t.Fatal(err)
		}
		return err == nil
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
		if _, history, _ = runCLI(t, s.env, "history", "victim"); strings.Contains(history, "forged") {
			break
		}
	}
	t.Fatalf("the user role wrote into serve's streams through reply subjects: %v\nvictim's history:\n%s", landed, history)
}
