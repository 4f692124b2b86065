package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/turnstile-dev/turnstile/api"
	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/internal/termsafe"
)

// reorder is free text a container (a failure's reason) or a user (a
// label, an env value, an image) can set that acts on a terminal without
// any C0 control: bidi overrides and isolates that show "gninnur" as
// "running" and reorder what follows on the line, C1 CSI (U+009B, which
// is ESC [ on terminals that take C1 controls), a zero-width space, a
// line separator.
const reorder = "\u202egninnur\u202c \u2067x\u2069 \u009b2J \u200b\u2028"

// noUnsafe fails if out holds a character that acts on a terminal, but
// its newlines.
func noUnsafe(t *testing.T, what, out string) {
	t.Helper()
	if i := strings.IndexFunc(out, func(r rune) bool { return r != '\n' && termsafe.Unsafe(r) }); i >= 0 {
		t.Errorf("%s: %q holds a raw %q", what, out, []rune(out[i:])[0])
	}
}

// TestHumanOutputEscapesBidi: tables, the history's live rows and
// describeState show bidi controls, zero-width and separator characters
// escaped (\u202e), as they did C0 and C1 controls; before, a reason or a
// label could reorder its row on the operator's screen.
func TestHumanOutputEscapesBidi(t *testing.T) {
	var b bytes.Buffer
	tb := newTable(&b, "ACTOR", "REASON")
	tb.row("alice", reorder)
	if err := tb.flush(); err != nil {
		t.Fatal(err)
	}
	noUnsafe(t, "table", b.String())
	if !strings.Contains(b.String(), `\u202egninnur\u202c`) {
		t.Errorf("table: %q does not show the bidi override escaped", b.String())
	}

	b.Reset()
	lt := &liveTable{w: &b}
	ev := api.Event{Seq: 1, Type: fsm.ProvisionFailedEv, From: "provisioning", To: "failed", Reason: reorder}
	lt.add(historyHeader, historyRow(ev))
	if err := lt.row(historyRow(ev)...); err != nil {
		t.Fatal(err)
	}
	noUnsafe(t, "history", b.String())

	noUnsafe(t, "describeState", describeState(fsm.Workspace{Status: fsm.Failed, LastError: reorder,
		Spec: fsm.Spec{Image: "img" + reorder, Labels: map[string]string{"note": reorder}}}))
}

// TestStructuredOutputInertOnATerminal: -o json (and a --watch's JSON
// lines) write C1 controls and bidi controls as \u escapes, which decode
// to the same value; before, they were written raw (encoding/json escapes
// C0 only), so `turnstile get -o json` on a terminal ran a container's
// CSI sequence. -o yaml failed outright on them ("yaml: control
// characters are not allowed"); now it writes them escaped.
func TestStructuredOutputInertOnATerminal(t *testing.T) {
	const csi = "\u009b2J\u009bH\x7f"
	for _, format := range []string{"json", "yaml"} {
		var b bytes.Buffer
		a := &app{streams: streams{out: &b, err: io.Discard}, output: format}
		ev := api.Event{Seq: 1, Type: fsm.ProvisionFailedEv, Reason: csi}
		if err := a.print(ev); err != nil {
			t.Fatalf("-o %s: %v", format, err)
		}
		var back api.Event
		if err := yaml.Unmarshal(b.Bytes(), &back); err != nil || back.Reason != csi { // YAML reads JSON too
			t.Errorf("-o %s: reason %q (%v), want it as it was", format, back.Reason, err)
		}
		if err := a.printNext(ev); err != nil {
			t.Fatalf("-o %s: %v", format, err)
		}
		noUnsafe(t, "-o "+format, b.String())
	}

	var b bytes.Buffer
	a := &app{streams: streams{out: &b, err: io.Discard}, output: "json"}
	ev := api.Event{Seq: 1, Type: fsm.ProvisionFailedEv, Reason: reorder}
	if err := a.print(ev); err != nil {
		t.Fatal(err)
	}
	noUnsafe(t, "-o json", b.String())
	var back api.Event
	if err := json.Unmarshal(b.Bytes(), &back); err != nil || back.Reason != reorder {
		t.Fatalf("-o json: reason %q (%v), want it as it was", back.Reason, err)
	}
}

// TestYAMLOutputEscapesBidi: -o yaml (and a --watch's YAML documents)
// writes bidi controls, zero-width and separator characters in values and
// keys as escapes in double-quoted scalars, which read back as the same
// value; before, go-yaml wrote them raw (YAML counts them printable), so
// a workspace's label or env value could reorder the operator's line. A
// format character beyond U+FFFF (U+E0001) made it fail: termsafe.JSON's
// surrogate pair is no escape go-yaml reads.
func TestYAMLOutputEscapesBidi(t *testing.T) {
	type doc struct {
		Reason string            `json:"reason"`
		Labels map[string]string `json:"labels"`
		Env    []string          `json:"env"`
		Seq    uint64            `json:"seq"`
		Plain  string            `json:"plain"`
		Token  string            `json:"token"`
	}
	in := doc{Reason: reorder + " \\ \"quoted\" \n\t" + "\U0001D400\U000E0001", Labels: map[string]string{"note": reorder, reorder: "key", "ok": "fine"},
		Env: []string{"A=" + reorder, "B=plain"}, Seq: 1<<63 + 1, Plain: "café",
		Token: "turnstile-yaml-0z"} // a value that looks like yamlEscaped's token
	var b bytes.Buffer
	a := &app{streams: streams{out: &b, err: io.Discard}, output: "yaml"}
	if err := a.print(in); err != nil {
		t.Fatal(err)
	}
	if err := a.printNext(in); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	noUnsafe(t, "-o yaml", out)
	if !strings.Contains(out, `\u202Egninnur\u202C`) || !strings.Contains(out, "plain: café\n") || !strings.Contains(out, "B=plain") {
		t.Errorf("-o yaml:\n%s", out)
	}
	first, _, _ := strings.Cut(out, "---\n")
	var back doc
	if err := yaml.Unmarshal([]byte(first), &back); err != nil {
		t.Fatalf("-o yaml: %v\n%s", err, first)
	}
	if back.Reason != in.Reason || back.Labels["note"] != reorder || back.Labels[reorder] != "key" || back.Labels["ok"] != "fine" ||
		len(back.Env) != 2 || back.Env[0] != in.Env[0] || back.Seq != in.Seq || back.Plain != in.Plain || back.Token != in.Token {
		t.Errorf("-o yaml read back as %+v, want %+v:\n%s", back, in, first)
	}
}

// TestJSONLogInertOnATerminal: serve's JSON log (--log-format json, the
// default when stderr is not a terminal) writes a container's exit reason
// with its C1 and bidi controls escaped, so `tail -f` of the log does not
// run them. The text log quotes them itself.
func TestJSONLogInertOnATerminal(t *testing.T) {
	for _, format := range []string{"json", "text"} {
		var b bytes.Buffer
		a := &app{streams: streams{out: io.Discard, err: &b}, logLevel: "info", logFormat: format}
		log, err := a.logger()
		if err != nil {
			t.Fatal(err)
		}
		log.Info("watcher: container exited", "reason", reorder)
		noUnsafe(t, format+" log", b.String())
		if format == "json" {
			var line map[string]any
			if err := json.Unmarshal(b.Bytes(), &line); err != nil || line["reason"] != reorder {
				t.Errorf("json log: %q (%v): the reason is not as it was", b.String(), err)
			}
		}
		// A forged line or key=value pair: slog quotes the value (text)
		// or escapes the newline (JSON), and so the message.
		b.Reset()
		forged := "x\ntime=2026-01-01T00:00:00Z level=ERROR msg=\"engine: forged\" workspace=w1"
		log.Info("nats: "+forged, "reason", forged)
		quoted := format == "json" || strings.Contains(b.String(), `msg="nats: x\ntime=`) && strings.Contains(b.String(), `reason="x\ntime=`)
		if strings.Count(b.String(), "\n") != 1 || !quoted {
			t.Errorf("%s log: %q: a value made a line or a field of its own", format, b.String())
		}
	}
}

// rawServer listens on a free port and answers every connection with
// answer, as a program holding serve's port (stopped serve, a stale
// api-url or nats-url) can: it chooses every byte.
func rawServer(t *testing.T, greet bool, answer string) string {
	t.Helper()
	return listenTCP(t, func(conn net.Conn) {
		if greet { // NATS: INFO first, then the client's CONNECT
			_, _ = conn.Write([]byte(impostorInfo))
		}
		_, _ = bufio.NewReader(conn).ReadString('\n')
		_, _ = conn.Write([]byte(answer))
	})
}

// TestErrorsInertOnATerminal: a program on serve's port (the impostor of
// TestCredentialsNotSentToAnImpostor) chooses the status line of its HTTP
// answer and the text of a NATS -ERR, which the CLI's error message
// quotes. An OSC 52 sequence there wrote the operator's clipboard and
// "\x1b[2K\r" rubbed out the warning; now the error shows them escaped,
// and keeps its own line breaks.
func TestErrorsInertOnATerminal(t *testing.T) {
	const osc = "\x1b]52;c;cm0gLXJmIH4K\x07\x1b[2K\rall good\u202e"
	secret, err := api.NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	httpAddr := rawServer(t, false, "HTTP/1.1 404 "+osc+"\r\nContent-Length: 0\r\n\r\n")
	code, _, errs := runCLI(t, map[string]string{"TURNSTILE_DATA_DIR": t.TempDir(), "TURNSTILE_API_URL": "http://" + httpAddr,
		"TURNSTILE_API_TOKEN": secret}, "get", "web")
	if code != exitError || !strings.Contains(errs, `\x1b]52;c;`) {
		t.Errorf("get against a fake API: exit %d, stderr %q; want exit 1 and the status line escaped", code, errs)
	}
	noUnsafe(t, "get against a fake API", errs)

	natsAddr := rawServer(t, true, "-ERR '"+osc+"'\r\n")
	code, _, errs = runCLI(t, map[string]string{"TURNSTILE_DATA_DIR": t.TempDir(), "TURNSTILE_NATS_URL": "nats://" + natsAddr,
		"TURNSTILE_NATS_TOKEN": "x"}, "history", "web")
	if code != exitError {
		t.Errorf("history against a fake NATS: exit %d, stderr %q; want exit 1", code, errs)
	}
	noUnsafe(t, "history against a fake NATS", errs)
}
