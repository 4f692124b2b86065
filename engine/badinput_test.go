package engine_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/internal/testenv"
)

// streamMsgs counts the messages of a stream, only those on subjects
// matching filter if it is not empty.
func streamMsgs(t *testing.T, core *testenv.Core, stream, filter string) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := core.JS.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	if filter == "" {
		info, err := st.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return info.State.Msgs
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(filter))
	if err != nil {
		t.Fatal(err)
	}
	var n uint64
	for _, c := range info.State.Subjects {
		n += c
	}
	return n
}

// Bad input through the client is refused as invalid before anything is
// published.
func TestClientRefusesBadInput(t *testing.T) {
	core := testenv.StartCore(t, testenv.CoreOptions{})
	cl := core.Client(t, "t")
	names := events.NewNames("")
	spec := &fsm.Spec{Image: "alpine:3"}
	for _, tc := range []struct {
		name    string
		cmd     fsm.Command
		message string
	}{
		{"IDWithDot", fsm.Command{Type: fsm.Create, Workspace: "ws.1"}, "not a DNS label"},
		{"IDWithStar", fsm.Command{Type: fsm.Create, Workspace: "ws-*"}, "not a DNS label"},
		{"IDIsStar", fsm.Command{Type: fsm.Stop, Workspace: "*"}, "not a DNS label"},
		{"IDWithGreaterThan", fsm.Command{Type: fsm.Create, Workspace: "ws->"}, "not a DNS label"},
		{"IDIsGreaterThan", fsm.Command{Type: fsm.Delete, Workspace: ">"}, "not a DNS label"},
		{"IDWithSpace", fsm.Command{Type: fsm.Create, Workspace: "ws 1"}, "not a DNS label"},
		{"IDWithNewline", fsm.Command{Type: fsm.Create, Workspace: "ws-1\n"}, "not a DNS label"},
		{"IDUnicode", fsm.Command{Type: fsm.Create, Workspace: "wš-1"}, "not a DNS label"},
		{"IDUppercase", fsm.Command{Type: fsm.Create, Workspace: "WS-1"}, "not a DNS label"},
		{"IDLeadingDash", fsm.Command{Type: fsm.Create, Workspace: "-ws"}, "not a DNS label"},
		{"IDEmpty", fsm.Command{Type: fsm.Create, Workspace: ""}, "workspace id is empty"},
		{"IDTooLong", fsm.Command{Type: fsm.Create, Workspace: strings.Repeat("a", 64)}, "64 bytes long"},
		{"IDFarTooLong", fsm.Command{Type: fsm.Create, Workspace: strings.Repeat("a", 1000)}, "1000 bytes long"},
		{"UnknownType", fsm.Command{Type: "reboot", Workspace: "ws-1"}, `unknown command type "reboot"`},
		{"EmptyType", fsm.Command{Workspace: "ws-1"}, `unknown command type ""`},
		{"SpecOnStart", fsm.Command{Type: fsm.Start, Workspace: "ws-1", Spec: spec}, "start takes no spec"},
		{"SpecOnDelete", fsm.Command{Type: fsm.Delete, Workspace: "ws-1", Spec: spec}, "delete takes no spec"},
		{"ConfigureWithoutSpec", fsm.Command{Type: fsm.Configure, Workspace: "ws-1"}, "configure needs a spec"},
		{"NegativeMemory", fsm.Command{Type: fsm.Create, Workspace: "ws-1", Spec: &fsm.Spec{MemoryBytes: -1}}, "memory_bytes -1"},
		{"GenerationOnUserCommand", fsm.Command{Type: fsm.Stop, Workspace: "ws-1", Generation: 3}, "user command"},
		{"SystemWithoutGeneration", fsm.Command{Type: fsm.ProvisionSucceeded, Workspace: "ws-1"}, "needs the generation"},
		{"BadCommandID", fsm.Command{ID: "a.b", Type: fsm.Create, Workspace: "ws-1"}, "command id"},
		{"CommandTooLarge", fsm.Command{Type: fsm.Create, Workspace: "ws-1", Spec: bigSpec()}, "at most 65536 allowed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_, err := cl.Send(ctx, tc.cmd)
			checkInvalid(t, "Send", err, tc.message)
			_, err = cl.Publish(ctx, tc.cmd)
			checkInvalid(t, "Publish", err, tc.message)
		})
	}
	if n := streamMsgs(t, core, names.CommandStream(), ""); n != 0 {
		t.Fatalf("%d commands were published", n)
	}
	// The client still works, and the count above could have seen one.
	if o := send(t, cl, fsm.Command{Type: fsm.Create, Workspace: "ws-1"}); o.Outcome != fsm.Accepted {
		t.Fatalf("create: %+v", o)
	}
	if n := streamMsgs(t, core, names.CommandStream(), ""); n != 1 {
		t.Fatalf("%d commands in the stream after one valid one", n)
	}
	checkLog(t, core)
}

// bigSpec is valid field by field but too large for one command.
func bigSpec() *fsm.Spec {
	s := &fsm.Spec{Env: map[string]string{}}
	for i := range 20 {
		s.Env[fmt.Sprintf("V%d", i)] = strings.Repeat("x", fsm.MaxValueLen)
	}
	return s
}

func checkInvalid(t *testing.T, what string, err error, message string) {
	t.Helper()
	var rej *fsm.Rejection
	if !errors.As(err, &rej) || rej.Code != fsm.CodeInvalid {
		t.Fatalf("%s: %v, want a rejection with code invalid", what, err)
	}
	if !strings.Contains(rej.Message, message) {
		t.Fatalf("%s: message %q does not say %q", what, rej.Message, message)
	}
}

// Commands published raw, bypassing the client, are refused by the engine
// with a stored invalid outcome; nothing is appended and the engine goes on.
func TestEngineRefusesRawBadInput(t *testing.T) {
	core := testenv.StartCore(t, testenv.CoreOptions{})
	names := events.NewNames("")
	const ws = "raw-1"
	subject := names.Command(ws)
	// Grows six-fold when re-encoded ('<' becomes \u003c): small on the
	// wire, too large to store as an event.
	var grows strings.Builder
	grows.WriteString(`{"id":"raw-grows","type":"create","workspace":"raw-1","spec":{"env":{`)
	for i := range 15 {
		if i > 0 {
			grows.WriteByte(',')
		}
		fmt.Fprintf(&grows, `"V%d":"%s"`, i, strings.Repeat("<", 4000))
	}
	grows.WriteString(`}}}`)

	type rawCase struct {
		name    string
		subject string // "" means subject
		body    string
		msgID   string // Nats-Msg-Id header; "" sets none
		wantID  string // the outcome's command id; "" means msgID, "-" means invalid-<seq>
		message string
		headers nats.Header // more headers
	}
	cases := []rawCase{
		{name: "MalformedJSON", body: `{"id":"raw-malformed","type":"create",`, msgID: "raw-malformed", message: "malformed"},
		{name: "NotJSON", body: `create raw-1 please`, msgID: "raw-not-json", message: "not valid JSON"},
		{name: "NotJSONNoMsgID", body: `create raw-1 please`, wantID: "-", message: "not valid JSON"},
		{name: "UnknownField", body: `{"id":"raw-unknown-field","type":"create","workspace":"raw-1","colour":"blue"}`, msgID: "raw-unknown-field", message: `unknown field "colour"`},
		{name: "UnknownCommandType", body: `{"id":"raw-unknown-type","type":"reboot","workspace":"raw-1"}`, msgID: "raw-unknown-type", message: `unknown command type "reboot"`},
		{name: "WrongFieldType", body: `{"id":"raw-wrong-type","type":"create","workspace":"raw-1","generation":"one"}`, msgID: "raw-wrong-type", message: "wrong type"},
		{name: "OtherWorkspace", body: `{"id":"raw-other-ws","type":"create","workspace":"raw-2"}`, msgID: "raw-other-ws", message: `names workspace "raw-2" but was published for "raw-1"`},
		{name: "OtherWorkspaceNoMsgID", body: `{"id":"raw-other-ws-2","type":"create","workspace":"raw-2"}`, wantID: "raw-other-ws-2", message: "was published for"},
		{name: "Oversized", body: `{"id":"raw-oversized","pad":"` + strings.Repeat("x", 100<<10) + `"}`, msgID: "raw-oversized", message: "at most 65536 allowed"},
		{name: "OversizedNoMsgID", body: strings.Repeat(" ", 100<<10), wantID: "-", message: "at most 65536 allowed"},
		{name: "GrowsPastLimit", body: grows.String(), msgID: "raw-grows", message: "at most 65536 allowed"},
		{name: "MsgIDDiffersFromID", body: `{"id":"raw-body-id","type":"create","workspace":"raw-1"}`, msgID: "raw-header-id", message: "differs from the command id"},
		{name: "EmptyBody", body: ``, msgID: "raw-empty", message: "malformed"},
		{name: "EmptyBodyNoMsgID", body: ``, wantID: "-", message: "malformed"},
		{name: "Null", body: `null`, msgID: "raw-null", message: `names workspace "" but was published for "raw-1"`},
		{name: "TrailingData", body: `{"id":"raw-trailing","type":"create","workspace":"raw-1"} {}`, msgID: "raw-trailing", message: "trailing data"},
		{name: "TrailingBracket", body: `{"id":"raw-trailing-2","type":"create","workspace":"raw-1"}]`, msgID: "raw-trailing-2", message: "trailing data"},
		{name: "DeeplyNested", body: `{"id":"raw-nested","spec":{"env":` + strings.Repeat(`[`, 20000) + `}}`, msgID: "raw-nested", message: "exceeded max depth"},
		{name: "SpecOnStart", body: `{"id":"raw-spec-start","type":"start","workspace":"raw-1","spec":{}}`, msgID: "raw-spec-start", message: "start takes no spec"},
		{name: "ConfigureNullSpec", body: `{"id":"raw-configure","type":"configure","workspace":"raw-1","spec":null}`, msgID: "raw-configure", message: "configure needs a spec"},
		{name: "NegativeMemory", body: `{"id":"raw-memory","type":"create","workspace":"raw-1","spec":{"memory_bytes":-1}}`, msgID: "raw-memory", message: "memory_bytes"},
		{name: "HugeNumber", body: `{"id":"raw-huge","type":"create","workspace":"raw-1","spec":{"memory_bytes":1e400}}`, msgID: "raw-huge", message: "wrong type"},
		{name: "BadCommandIDs", body: `{"id":"bad id","type":"create","workspace":"raw-1"}`, msgID: "also bad", wantID: "-", message: "command id"},
		// nats.go's pull took these for the server's statuses: the
		// first ended the engine's pull of the partition, for good.
		{name: "StatusBadRequest", msgID: "raw-status-400", message: "malformed", headers: nats.Header{"Status": {"400"}, "Description": {"Bad Request"}}},
		{name: "StatusConsumerDeleted", wantID: "-", message: "malformed", headers: nats.Header{"Status": {"409"}, "Description": {"Consumer Deleted"}}},
		{name: "StatusHeartbeat", msgID: "raw-status-100", message: "malformed", headers: nats.Header{"Status": {"100"}, "Description": {"Idle Heartbeat"}}},
		{name: "StatusNoMessages", msgID: "raw-status-404", message: "malformed", headers: nats.Header{"Status": {"404"}, "Nats-Pending-Messages": {"1000"}}},
		{name: "StatusPinMismatch", msgID: "raw-status-423", message: "malformed", headers: nats.Header{"Status": {"423"}}},
		{name: "StatusNoResponders", msgID: "raw-status-503", message: "malformed", headers: nats.Header{"Status": {"503"}}},
		{name: "BadSubjectToken", subject: names.Command("RAW"), body: `{"id":"raw-upper","type":"create","workspace":"RAW"}`, msgID: "raw-upper", message: "not a DNS label"},
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ids := map[string]rawCase{}
	for _, tc := range cases {
		m := nats.NewMsg(subject)
		if tc.subject != "" {
			m.Subject = tc.subject
		}
		m.Data = []byte(tc.body)
		if tc.msgID != "" {
			m.Header.Set(jetstream.MsgIDHeader, tc.msgID)
		}
		for k, v := range tc.headers {
			m.Header[k] = v
		}
		ack, err := core.JS.PublishMsg(ctx, m)
		if err != nil {
			t.Fatalf("%s: publish: %v", tc.name, err)
		}
		id := tc.wantID
		switch id {
		case "":
			id = tc.msgID
		case "-":
			id = fmt.Sprintf("invalid-%d", ack.Sequence)
		}
		ids[id] = tc
	}
	for id, tc := range ids {
		t.Run(tc.name, func(t *testing.T) {
			var o events.OutcomeRecord
			testenv.Eventually(t, 20*time.Second, "outcome of "+id, func() bool {
				var ok bool
				var err error
				o, ok, err = core.Store.Outcome(ctx, id)
				if err != nil {
					t.Fatalf("outcome of %s: %v", id, err)
				}
				return ok
			})
			if o.CommandID != id || o.Outcome != fsm.Rejected || o.Rejection == nil || o.Rejection.Code != fsm.CodeInvalid {
				t.Fatalf("outcome: %+v", o)
			}
			if o.EventSeq != 0 {
				t.Errorf("refused command has event seq %d", o.EventSeq)
			}
			if !strings.Contains(o.Rejection.Message, tc.message) {
				t.Errorf("message %q does not say %q", o.Rejection.Message, tc.message)
			}
		})
	}
	// The body's id of the mismatched message is not the message's identity:
	// nothing may be recorded under it.
	if o, ok, err := core.Store.Outcome(ctx, "raw-body-id"); err != nil || ok {
		t.Errorf("outcome recorded under the body id of a message with another Nats-Msg-Id: %+v, %v", o, err)
	}
	if n := streamMsgs(t, core, names.EventStream(), names.Events()); n != 0 {
		t.Fatalf("%d events appended for refused commands", n)
	}

	// The engine goes on, for the same workspace and others.
	cl := core.Client(t, "t")
	for _, w := range []string{ws, "raw-2"} {
		if o := send(t, cl, fsm.Command{Type: fsm.Create, Workspace: w}); o.Outcome != fsm.Accepted || o.EventSeq != 1 {
			t.Fatalf("create %s after bad input: %+v", w, o)
		}
	}
	testenv.Eventually(t, 10*time.Second, "every command handled", func() bool { return consumerDone(core) })
	states, outcomes := checkLog(t, core)
	if len(states) != 2 || states[ws].Status != fsm.Provisioning || states["raw-2"].Status != fsm.Provisioning {
		t.Fatalf("states: %+v", states)
	}
	if want := len(cases) + 2; len(outcomes) != want {
		t.Fatalf("%d outcomes for %d commands", len(outcomes), want)
	}
}

// A message whose Nats-Msg-Id differs from its body's id is refused under
// the header's id: it must not take the outcome of the command its body
// names, which may be published (properly) later.
func TestMismatchedMsgIDDoesNotShadowCommand(t *testing.T) {
	core := testenv.StartCore(t, testenv.CoreOptions{})
	names := events.NewNames("")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := fsm.Command{ID: "shadow-create", Type: fsm.Create, Workspace: "shadow"}
	b, err := events.EncodeCommand(cmd)
	if err != nil {
		t.Fatal(err)
	}
	m := nats.NewMsg(names.Command(cmd.Workspace))
	m.Data = b
	m.Header.Set(jetstream.MsgIDHeader, "shadow-other")
	if _, err := core.JS.PublishMsg(ctx, m); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 20*time.Second, "the mismatched message handled", func() bool { return consumerDone(core) })

	cl := core.Client(t, "t")
	if o := send(t, cl, cmd); o.Outcome != fsm.Accepted {
		t.Fatalf("create: %+v", o)
	}
	o, ok, err := core.Store.Outcome(ctx, cmd.ID)
	if err != nil || !ok || o.Outcome != fsm.Accepted || o.EventSeq != 1 {
		t.Fatalf("stored outcome of %s: %+v, %v, %v", cmd.ID, o, ok, err)
	}
	checkLog(t, core)
}

// A command id is its idempotency key even without a Nats-Msg-Id (plain
// `nats pub`, which the stream cannot dedupe): a second message with the id
// of a refused command gets the first one's outcome and appends nothing.
func TestReusedCommandIDWithoutMsgID(t *testing.T) {
	core := testenv.StartCore(t, testenv.CoreOptions{})
	names := events.NewNames("")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, body := range []string{
		`{"id":"reuse-1","type":"create","workspace":"reuse","spec":{"memory_bytes":-1}}`,
		`{"id":"reuse-1","type":"create","workspace":"reuse"}`,
	} {
		if _, err := core.JS.Publish(ctx, names.Command("reuse"), []byte(body)); err != nil {
			t.Fatal(err)
		}
	}
	testenv.Eventually(t, 20*time.Second, "both messages handled", func() bool { return consumerDone(core) })
	o, ok, err := core.Store.Outcome(ctx, "reuse-1")
	if err != nil || !ok || !isRejection(o, fsm.CodeInvalid) {
		t.Fatalf("stored outcome of reuse-1: %+v, %v, %v", o, ok, err)
	}
	if n := streamMsgs(t, core, names.EventStream(), names.Events()); n != 0 {
		t.Fatalf("%d events appended for a refused command id", n)
	}
	checkLog(t, core)
}
