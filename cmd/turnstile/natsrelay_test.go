package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestDirectGetBatchBounded: a batched direct get answers up to its
// max_bytes, which its sender chooses, else the server's 64 MB: the user
// role stores a few large commands (refused, kept for days) and asks for
// all of them at once, again and again, at some 60 bytes a request. Each
// answer is read and copied inside serve's process, holding the stream's
// writes meanwhile (measured: two such connections over 60 MB took serve's
// heap from 80 MB to 1.2 GB, and a command's publish waited 600 ms instead
// of 20). Through the users' account an answer is at most
// directGetMaxBytes (and the one message that crosses it).
func TestDirectGetBatchBounded(t *testing.T) {
	s := startInProcessServe(t, nil)
	nc, js, _ := s.connectUser(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	big := bytes.Repeat([]byte("x"), 900_000)
	const stored = 12
	for i := range stored {
		if _, err := js.Publish(ctx, fmt.Sprintf("turnstile.cmd.filler%d", i), big); err != nil {
			t.Fatal(err)
		}
	}
	for _, req := range []string{
		`{"seq":1,"batch":1000000,"max_bytes":1099511627776}`,
		`{"seq":1,"batch":1000000}`,
		`{"seq":1,"next_by_subj":"turnstile.cmd.>","batch":1000000,"max_bytes":-1}`,
		`{"multi_last":["turnstile.cmd.>"],"max_bytes":1099511627776}`,
		// As the server reads JSON: field names in any case, the last of
		// duplicate keys.
		`{"seq":1,"BATCH":1000000,"Max_Bytes":1099511627776}`,
		`{"seq":1,"batch":1000000,"max_bytes":1000,"MAX_BYTES":1099511627776}`,
	} {
		got, end := directGetAnswer(t, ctx, nc, "$JS.API.DIRECT.GET.TURNSTILE_COMMANDS", req)
		if got*len(big) > directGetMaxBytes+len(big) {
			t.Errorf("%s: %d messages of %d bytes answered, want at most %d bytes (and one message)", req, got, len(big), directGetMaxBytes)
		}
		if end != "204" {
			t.Errorf("%s: the answer ended with status %q, want 204 (end of batch)", req, end)
		}
	}
	// A reader that asks again from where the answer ended reads all.
	var all int
	for seq := 1; all < stored; {
		got, _ := directGetAnswer(t, ctx, nc, "$JS.API.DIRECT.GET.TURNSTILE_COMMANDS", fmt.Sprintf(`{"seq":%d,"batch":100}`, seq))
		if got == 0 {
			t.Fatalf("read %d of %d messages", all, stored)
		}
		all, seq = all+got, seq+got
	}
	// Gets of one message, by sequence or by last subject, as before.
	if got, _ := directGetAnswer(t, ctx, nc, "$JS.API.DIRECT.GET.TURNSTILE_COMMANDS", `{"seq":3}`); got != 1 {
		t.Errorf("a get by sequence: %d messages", got)
	}
	if got, _ := directGetAnswer(t, ctx, nc, "$JS.API.DIRECT.GET.TURNSTILE_COMMANDS.turnstile.cmd.*.filler0", ``); got != 1 {
		t.Errorf("a get of the last message on a subject: %d messages", got)
	}
}

// directGetAnswer sends a direct get and returns how many messages its
// answer held and the status that ended it ("" for a single message).
func directGetAnswer(t *testing.T, ctx context.Context, nc *nats.Conn, subject, req string) (int, string) {
	t.Helper()
	inbox := nc.NewInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := nc.PublishRequest(subject, inbox, []byte(req)); err != nil {
		t.Fatal(err)
	}
	batched := strings.Contains(strings.ToLower(req), "batch") || strings.Contains(req, "multi_last")
	n := 0
	for {
		m, err := sub.NextMsgWithContext(ctx)
		if err != nil {
			t.Fatalf("%s: %v after %d messages", req, err, n)
		}
		if st := m.Header.Get("Status"); st != "" && len(m.Data) == 0 {
			return n, st
		}
		n++
		if !batched {
			return n, ""
		}
	}
}

// TestBoundDirectGet: the bound the relay writes is the one the server
// reads; requests of one message and bodies the server cannot read either
// pass unchanged.
func TestBoundDirectGet(t *testing.T) {
	for _, tc := range []struct {
		body      string
		unchanged bool
	}{
		{`{"seq":1}`, true},
		{`{"last_by_subj":"turnstile.evt.x"}`, true},
		{`not json`, true},
		{``, true},
		{`{"seq":1,"batch":10,"max_bytes":1000}`, true},
		{`{"seq":1,"batch":10,"max_bytes":-1}`, true},
		{`{"seq":1,"batch":10}`, false},
		{`{"seq":1,"batch":10,"max_bytes":99999999999}`, false},
		{`{"seq":1,"Batch":10,"MAX_BYTES":99999999999}`, false},
		{`{"seq":1,"batch":10,"max_bytes":1,"max_bytes":99999999999}`, false},
		{`{"multi_last":["a.>"],"up_to_seq":9}`, false},
	} {
		got := boundDirectGet([]byte(tc.body))
		if tc.unchanged {
			if string(got) != tc.body {
				t.Errorf("%s: became %s", tc.body, got)
			}
			continue
		}
		var before, after server.JSApiMsgGetRequest
		if err := json.Unmarshal([]byte(tc.body), &before); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(got, &after); err != nil {
			t.Fatalf("%s: became %s: %v", tc.body, got, err)
		}
		if after.MaxBytes != directGetMaxBytes {
			t.Errorf("%s: became %s, max_bytes %d", tc.body, got, after.MaxBytes)
		}
		after.MaxBytes = before.MaxBytes
		if fmt.Sprint(before) != fmt.Sprint(after) {
			t.Errorf("%s: became %s, which asks for something else", tc.body, got)
		}
	}
}

// TestStatusHeadersStallNoPartition: nats.go takes a message with an
// empty body and a Status header for the server's own status, wherever it
// comes from: a command stored with "Status: 400" and no body, delivered
// to the engine's pull, ended the pull as a bad request, and the engine's
// reads of that partition's unfinished commands failed the same way, for
// good: every workspace of the partition waited for ever. (409 "Consumer
// Deleted" ends a pull too; 100 and 503 swallow the delivery, never
// acked.) The relay refuses a command with no body, with a Status or
// Description header, or with a Nats-Pin-Id (the engine's pull takes its
// pin from the first, which would be the sender's).
func TestStatusHeadersStallNoPartition(t *testing.T) {
	s := startInProcessServe(t, nil)
	_, js, _ := s.connectUser(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for i, h := range []nats.Header{
		{"Status": {"400"}, "Description": {"Bad Request"}},
		{"Status": {"409"}, "Description": {"Consumer Deleted"}},
		{"Status": {"100"}, "Description": {"Idle Heartbeat"}},
		{"Status": {"503"}},
	} {
		ws := fmt.Sprintf("stalled%d", i)
		if _, err := js.PublishMsg(ctx, &nats.Msg{Subject: "turnstile.cmd." + ws, Header: h}); err == nil {
			t.Logf("a command with %v and no body was stored", h)
		}
		if code, out, errs := runCLI(t, s.env, "create", ws, "--wait", "--timeout", "15s"); code != 0 {
			t.Fatalf("create %s after a stored message with %v and no body: exit %d\n%s%s", ws, h, code, out, errs)
		}
	}
	for _, m := range []*nats.Msg{
		{Subject: "turnstile.cmd.refused"},
		{Subject: "turnstile.cmd.refused", Header: nats.Header{"Status": {"400"}}, Data: []byte(`{}`)},
		{Subject: "turnstile.cmd.refused", Header: nats.Header{"Description": {"Consumer Deleted"}}, Data: []byte(`{}`)},
		{Subject: "turnstile.cmd.refused", Header: nats.Header{"Nats-Pin-Id": {"forged"}}, Data: []byte(`{}`)},
		{Subject: "turnstile.cmd.refused", Header: nats.Header{"Nats-Msg-Id": {strings.Repeat("x", 60<<10)}}, Data: []byte(`{}`)},
	} {
		_, err := js.PublishMsg(ctx, m)
		var apiErr *jetstream.APIError
		if !errors.As(err, &apiErr) || apiErr.Code != 400 {
			t.Errorf("a command with %d header(s) %v and %d bytes: %v, want a 400 refusal", len(m.Header), slices.Collect(maps.Keys(m.Header)), len(m.Data), err)
		}
	}
	// What a command may carry still passes: an id, a reply, trace headers.
	if _, err := js.PublishMsg(ctx, &nats.Msg{Subject: "turnstile.cmd.passes", Data: []byte(`{}`), Header: nats.Header{
		"Nats-Msg-Id": {"an-id"}, "Turnstile-Reply": {"_INBOX.x"}, "Nats-Trace-Dest": {"turnstile.cmd.traces"}}}); err != nil {
		t.Errorf("an ordinary command: %v", err)
	}
}

// TestStreamInfoDetailsRefused: a stream info request may ask for every
// subject's count (subjects_filter) or every deleted sequence
// (deleted_details). The server builds and sorts the whole list at each
// request: a user that stored commands for 20,000 workspaces made each
// info cost 25 ms and 550 kB instead of 0.1 ms; the event stream holds a
// subject per command ever. Through the users' account only the members
// bucket (turnstile status) may be asked for its subjects.
func TestStreamInfoDetailsRefused(t *testing.T) {
	s := startInProcessServe(t, nil)
	nc, _, _ := s.connectUser(t)
	for _, stream := range []string{"TURNSTILE_COMMANDS", "TURNSTILE_SYSTEM", "TURNSTILE_EVENTS"} {
		for _, req := range []string{`{"subjects_filter":">"}`, `{"deleted_details":true}`, `{"SUBJECTS_FILTER":"turnstile.>"}`} {
			m, err := nc.Request("$JS.API.STREAM.INFO."+stream, []byte(req), 10*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			var resp struct {
				Error *struct{ Code int } `json:"error"`
			}
			if err := json.Unmarshal(m.Data, &resp); err != nil {
				t.Fatal(err)
			}
			if resp.Error == nil || resp.Error.Code != 400 {
				t.Errorf("%s %s: answered %.200s, want a 400 refusal", stream, req, m.Data)
			}
		}
		if _, err := nc.Request("$JS.API.STREAM.INFO."+stream, nil, 10*time.Second); err != nil {
			t.Errorf("a plain info of %s: %v", stream, err)
		}
	}
	// status reads the engines' members through their subjects.
	if code, out, errs := runCLI(t, s.env, "status"); code != 0 || !strings.Contains(out, "turnstile-engine") {
		t.Fatalf("status: exit %d\n%s%s", code, out, errs)
	}
}
