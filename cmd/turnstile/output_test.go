package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/turnstile-dev/turnstile/api"
	"github.com/turnstile-dev/turnstile/apiclient"
	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/internal/termsafe"
)

func TestFormatAge(t *testing.T) {
	now := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		ago  time.Duration
		want string
	}{
		{0, "0s"}, {-time.Second, "0s"}, {45 * time.Second, "45s"}, {12 * time.Minute, "12m"},
		{3*time.Hour + 5*time.Minute, "3h5m"}, {3 * time.Hour, "3h"}, {11*time.Hour + 5*time.Minute, "11h"}, {50 * time.Hour, "2d"},
	} {
		at := now.Add(-tc.ago)
		if got := formatAge(&at, now); got != tc.want {
			t.Errorf("%v ago: %q, want %q", tc.ago, got, tc.want)
		}
	}
	if got := formatAge(nil, now); got != "-" {
		t.Errorf("no time: %q, want -", got)
	}
}

// TestLiveTable: rows written one by one line up with the widest cell
// seen so far.
func TestLiveTable(t *testing.T) {
	var b bytes.Buffer
	lt := &liveTable{w: &b}
	lt.add([]string{"SEQ", "EVENT"}, []string{"1", "created"})
	for _, r := range [][]string{{"SEQ", "EVENT"}, {"1", "created"}, {"10", "provisioned"}} {
		if err := lt.row(r...); err != nil {
			t.Fatal(err)
		}
	}
	want := "SEQ  EVENT\n1    created\n10   provisioned\n"
	if b.String() != want {
		t.Fatalf("got\n%s\nwant\n%s", b.String(), want)
	}
}

// TestHumanOutputEscapesControls: free text (an actor, a last error) with
// an OSC sequence or a newline cannot retitle or rewrite the operator's
// terminal, nor fake a row, in tables, the history's live rows, describeState
// or a --wait error; -o json keeps the value as it is.
func TestHumanOutputEscapesControls(t *testing.T) {
	const evil = "\x1b]0;pwned\x07\nfake row\tx\r\x7f\u009b\xff"
	clean := func(t *testing.T, what, out string, lines int) {
		t.Helper()
		if strings.ContainsFunc(out, func(r rune) bool { return r != '\n' && termsafe.Unsafe(r) }) || strings.Count(out, "\n") != lines {
			t.Errorf("%s: %q holds a control character or is not %d line(s)", what, out, lines)
		}
		if !strings.Contains(out, `\x1b]0;pwned\a\nfake row\tx\r\x7f\u009b`+"\uFFFD") {
			t.Errorf("%s: %q does not show the text escaped", what, out)
		}
	}
	var b bytes.Buffer
	tb := newTable(&b, "ACTOR", "REASON")
	tb.row(evil, "ok")
	if err := tb.flush(); err != nil {
		t.Fatal(err)
	}
	clean(t, "table", b.String(), 2)

	b.Reset()
	lt := &liveTable{w: &b}
	ev := api.Event{Seq: 1, Type: "workspace.created", From: "none", To: "provisioning", Actor: evil, Reason: evil}
	lt.add(historyHeader, historyRow(ev))
	for _, r := range [][]string{historyHeader, historyRow(ev)} {
		if err := lt.row(r...); err != nil {
			t.Fatal(err)
		}
	}
	clean(t, "history", b.String(), 2)

	clean(t, "describeState", describeState(fsm.Workspace{Status: fsm.Failed, LastError: evil})+"\n", 1)

	a := &app{streams: streams{out: io.Discard, err: io.Discard}}
	res := api.CommandResult{Command: fsm.Start, Workspace: "w", State: fsm.Provisioning.String(), Generation: 1, EventSeq: 1}
	hc := fakeFailedWait(t, evil)
	err := a.waitSteadyHTTP(context.Background(), hc, time.Now(), &res, time.Minute)
	if err == nil {
		t.Fatal("a wait that ends failed returned no error")
	}
	clean(t, "--wait error", err.Error()+"\n", 1)

	b.Reset()
	if err := printJSON(&b, api.Event{Actor: evil}); err != nil {
		t.Fatal(err)
	}
	var back api.Event
	if err := json.Unmarshal(b.Bytes(), &back); err != nil || back.Actor != strings.ToValidUTF8(evil, "\uFFFD") {
		t.Fatalf("-o json: actor %q (%v), want it as it was", back.Actor, err)
	}
}

// fakeFailedWait is an API client whose event stream says the workspace
// failed with reason.
func fakeFailedWait(t *testing.T, reason string) *apiclient.Client {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		b, err := json.Marshal(api.Event{Seq: 2, Type: "workspace.provision_failed", From: "provisioning", To: fsm.Failed.String(),
			Generation: 1, Reason: reason})
		if err != nil {
			t.Error(err)
		}
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprintf(w, "id: 2\ndata: %s\n\n", b)
	}))
	t.Cleanup(srv.Close)
	hc, err := apiclient.New(srv.URL, strings.Repeat("t", 43), srv.Client())
	if err != nil {
		t.Fatal(err)
	}
	return hc
}
