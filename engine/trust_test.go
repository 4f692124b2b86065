package engine_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/turnstile-dev/turnstile/client"
	"github.com/turnstile-dev/turnstile/engine"
	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/internal/testenv"
)

// publishRaw publishes body on subject as a plain NATS client would, with
// a Nats-Msg-Id (if msgID is not empty) and extra headers, and returns the
// stream sequence.
func publishRaw(t *testing.T, core *testenv.Core, subject, msgID, body string, headers ...string) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m := nats.NewMsg(subject)
	m.Data = []byte(body)
	if msgID != "" {
		m.Header.Set(jetstream.MsgIDHeader, msgID)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		m.Header.Set(headers[i], headers[i+1])
	}
	ack, err := core.JS.PublishMsg(ctx, m)
	if err != nil {
		t.Fatalf("publish on %s: %v", subject, err)
	}
	return ack.Sequence
}

// storedOutcome waits for the outcome stored under id.
func storedOutcome(t *testing.T, core *testenv.Core, id string) events.OutcomeRecord {
	t.Helper()
	var o events.OutcomeRecord
	testenv.Eventually(t, 30*time.Second, "the outcome of "+id, func() bool {
		var ok bool
		var err error
		o, ok, err = core.Store.Outcome(context.Background(), id)
		if err != nil {
			t.Fatalf("outcome of %s: %v", id, err)
		}
		return ok
	})
	return o
}

// issue 12 item 2: system reports forged over raw NATS on the user command
// subject are refused (invalid, nothing applied), whatever they claim;
// reports count only from the system subject, and user commands are not
// taken from there.
func TestForgedSystemReportsRefused(t *testing.T) {
	core := testenv.StartCore(t, testenv.CoreOptions{})
	names := events.NewNames("")
	user := core.Client(t, "user")
	const ws = "forged"
	if o := send(t, user, fsm.Command{Type: fsm.Create, Workspace: ws}); o.Outcome != fsm.Accepted {
		t.Fatalf("create: %+v", o)
	}
	for _, tc := range []struct{ name, id, body string }{
		{"ProvisionSucceeded", "forge-ok", `{"id":"forge-ok","type":"provision_succeeded","workspace":"forged","generation":1,"container_id":"deadbeef"}`},
		{"ProvisionFailed", "forge-failed", `{"id":"forge-failed","type":"provision_failed","workspace":"forged","generation":1,"reason":"forged"}`},
		{"NoMsgID", "forge-nomsgid", `{"id":"forge-nomsgid","type":"provision_succeeded","workspace":"forged","generation":1}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			msgID := tc.id
			if tc.name == "NoMsgID" {
				msgID = ""
			}
			publishRaw(t, core, names.Command(ws), msgID, tc.body)
			o := storedOutcome(t, core, tc.id)
			if !isRejection(o, fsm.CodeInvalid) || !strings.Contains(o.Rejection.Message, "system report") || o.EventSeq != 0 {
				t.Fatalf("forged report on %s: %+v %+v", names.Command(ws), o, o.Rejection)
			}
		})
	}
	// A user command on the system subject is refused the same way.
	publishRaw(t, core, names.System(ws), "user-on-sys", `{"id":"user-on-sys","type":"delete","workspace":"forged"}`)
	if o := storedOutcome(t, core, "user-on-sys"); !isRejection(o, fsm.CodeInvalid) || !strings.Contains(o.Rejection.Message, "user command") {
		t.Fatalf("user command on the system subject: %+v %+v", o, o.Rejection)
	}
	h, err := core.Store.Load(context.Background(), ws)
	if err != nil {
		t.Fatal(err)
	}
	if h.State.Status != fsm.Provisioning || h.State.Generation != 1 || h.State.Seq != 1 {
		t.Fatalf("forged reports changed the workspace: %+v", h.State)
	}
	// A user client refuses to send a report at all.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = user.Send(ctx, fsm.Command{Type: fsm.ProvisionSucceeded, Workspace: ws, Generation: 1})
	checkInvalid(t, "user client sending a report", err, "system report")
	// The real report, on the system subject, is applied.
	sys := core.SystemClient(t, "provisioner")
	if o := send(t, sys, fsm.Command{Type: fsm.ProvisionSucceeded, Workspace: ws, Generation: 1}); o.Outcome != fsm.Accepted || o.State != fsm.Running {
		t.Fatalf("report on the system subject: %+v", o)
	}
	testenv.Eventually(t, 20*time.Second, "every command handled", func() bool { return consumerDone(core) })
	checkLog(t, core)
}

// issue 12 item 3: a user command under an id in the system namespace is
// refused and stored under invalid-<stream seq>, never under the report's
// id, so the report it tried to squat is decided when it comes.
func TestReservedCommandIDRefused(t *testing.T) {
	core := testenv.StartCore(t, testenv.CoreOptions{})
	names := events.NewNames("")
	const squat = "sys-provision-victim-g1"
	for _, tc := range []struct{ name, msgID, body string }{
		{"HeaderAndBody", squat, `{"id":"sys-provision-victim-g1","type":"start","workspace":"nobody"}`},
		{"BodyOnly", "", `{"id":"sys-provision-victim-g1","type":"start","workspace":"nobody"}`},
		{"HeaderOnly", squat, `{"id":"nobody-start","type":"start","workspace":"nobody"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			seq := publishRaw(t, core, names.Command("nobody"), tc.msgID, tc.body)
			o := storedOutcome(t, core, fmt.Sprintf("invalid-%d", seq))
			if !isRejection(o, fsm.CodeInvalid) {
				t.Fatalf("outcome: %+v", o)
			}
		})
	}
	if o, ok, err := core.Store.Outcome(context.Background(), squat); err != nil || ok {
		t.Fatalf("a user command took the report's id: %+v %v", o, err)
	}
	// Through the client it is refused before anything is published.
	user := core.Client(t, "user")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := user.Send(ctx, fsm.Command{ID: squat, Type: fsm.Start, Workspace: "nobody"})
	checkInvalid(t, "Send under a reserved id", err, "reserved")

	if o := send(t, user, fsm.Command{Type: fsm.Create, Workspace: "victim"}); o.Outcome != fsm.Accepted {
		t.Fatalf("create victim: %+v", o)
	}
	sys := core.SystemClient(t, "provisioner")
	if o := send(t, sys, fsm.Command{ID: squat, Type: fsm.ProvisionSucceeded, Workspace: "victim", Generation: 1}); o.Outcome != fsm.Accepted {
		t.Fatalf("the report: %+v", o)
	}
	waitState(t, core, "victim", fsm.Running, 1)
	testenv.Eventually(t, 20*time.Second, "every command handled", func() bool { return consumerDone(core) })
	checkLog(t, core)
}

// issue 12 item 4: the engine sends direct replies only under _INBOX (or a
// configured prefix). A Turnstile-Reply naming another workspace's event
// subject writes nothing there; the outcome is still stored.
func TestReplySubjectConfined(t *testing.T) {
	core := testenv.StartCore(t, testenv.CoreOptions{})
	names := events.NewNames("")
	user := core.Client(t, "user")
	if o := send(t, user, fsm.Command{Type: fsm.Create, Workspace: "victim2"}); o.Outcome != fsm.Accepted {
		t.Fatalf("create victim2: %+v", o)
	}
	before := streamMsgs(t, core, names.EventStream(), names.Event("victim2"))
	for i, reply := range []string{names.Event("victim2"), names.Command("victim2"), "_TURNSTILE_INBOX.x", "_INBOX"} {
		id := fmt.Sprintf("deputy-%d", i)
		publishRaw(t, core, names.Command("attacker"), id, fmt.Sprintf(`{"id":%q,"type":"start","workspace":"attacker"}`, id),
			"Turnstile-Reply", reply)
		if o := storedOutcome(t, core, id); !isRejection(o, fsm.CodeNotFound) {
			t.Fatalf("outcome of %s: %+v", id, o)
		}
	}
	testenv.Eventually(t, 20*time.Second, "every command handled (replies are sent before the ack)", func() bool { return consumerDone(core) })
	if after := streamMsgs(t, core, names.EventStream(), names.Event("victim2")); after != before {
		t.Fatalf("the engine wrote %d message(s) on %s for a sender's reply header", after-before, names.Event("victim2"))
	}
	if n := streamMsgs(t, core, names.CommandStream(), names.StoredCommands("victim2")); n != 1 {
		t.Fatalf("%d commands on %s, want the create alone", n, names.Command("victim2"))
	}
	h, err := core.Store.Load(context.Background(), "victim2")
	if err != nil || h.State.Status != fsm.Provisioning || h.State.Seq != 1 {
		t.Fatalf("victim2: %+v %v", h.State, err)
	}
	checkLog(t, core)
}

// issue 12 item 3: the engine alerts (metric) on a system report whose id
// holds another command's outcome; the report is not applied.
func TestEngineCountsForeignReportOutcome(t *testing.T) {
	metrics := engine.NewMetrics(prometheus.NewRegistry())
	core := testenv.StartCore(t, testenv.CoreOptions{Engine: engine.Config{Metrics: metrics}})
	names := events.NewNames("")
	sys := core.SystemClient(t, "provisioner")
	send(t, sys, fsm.Command{Type: fsm.Create, Workspace: "victim", Actor: "tester"})
	if o := send(t, sys, fsm.Command{ID: "sys-taken", Type: fsm.StopSucceeded, Workspace: "elsewhere", Generation: 1}); o.Outcome != fsm.Rejected {
		t.Fatalf("planted outcome: %+v", o)
	}
	// The same id for victim's report, without a Nats-Msg-Id (the stream
	// cannot drop it as a duplicate): the engine finds the planted outcome.
	publishRaw(t, core, names.System("victim"), "", `{"id":"sys-taken","type":"provision_succeeded","workspace":"victim","generation":1}`)
	testenv.Eventually(t, 20*time.Second, "the report handled", func() bool { return consumerDone(core) })
	if n := testutil.ToFloat64(metrics.ReportIDConflicts); n != 1 {
		t.Fatalf("report id conflicts: %v, want 1", n)
	}
	waitState(t, core, "victim", fsm.Provisioning, 1)
}

// A user command may not claim the actor of one of Turnstile's own parts
// (found in review: a NATS user's stop recorded as the worker's, a delete
// as the reconciler's, in the history, the read model and webhooks): it is
// refused as invalid, whatever the case, and nothing is applied. Reports
// of those parts, on the system subject, keep their actors.
func TestSystemActorsRefusedOnUserCommands(t *testing.T) {
	core := testenv.StartCore(t, testenv.CoreOptions{})
	names := events.NewNames("")
	user := core.Client(t, "user")
	const ws = "actors"
	if o := send(t, user, fsm.Command{Type: fsm.Create, Workspace: ws}); o.Outcome != fsm.Accepted {
		t.Fatalf("create: %+v", o)
	}
	for _, actor := range []string{"worker", "reconciler", "Supervisor", "watcher", "provisioner"} {
		id := "as-" + strings.ToLower(actor)
		publishRaw(t, core, names.Command(ws), id, fmt.Sprintf(`{"id":%q,"type":"delete","workspace":%q,"actor":%q}`, id, ws, actor))
		o := storedOutcome(t, core, id)
		if !isRejection(o, fsm.CodeInvalid) || !strings.Contains(o.Rejection.Message, "Turnstile's own") || o.EventSeq != 0 {
			t.Fatalf("delete claiming actor %s: %+v %+v", actor, o, o.Rejection)
		}
	}
	h, err := core.Store.Load(context.Background(), ws)
	if err != nil {
		t.Fatal(err)
	}
	if h.State.Status != fsm.Provisioning || h.State.Seq != 1 {
		t.Fatalf("a command claiming a system actor changed the workspace: %+v", h.State)
	}
	// Through the client it is refused before anything is published.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = user.Send(ctx, fsm.Command{Type: fsm.Stop, Workspace: ws, Actor: "worker"})
	checkInvalid(t, "user client claiming the worker's actor", err, "Turnstile's own")
	// The worker's own report, on the system subject, keeps its actor.
	sys := core.SystemClient(t, "worker")
	if o := send(t, sys, fsm.Command{Type: fsm.ProvisionSucceeded, Workspace: ws, Generation: 1}); o.Outcome != fsm.Accepted {
		t.Fatalf("report on the system subject: %+v", o)
	}
	testenv.Eventually(t, 20*time.Second, "every command handled", func() bool { return consumerDone(core) })
	checkLog(t, core)
}

// TestAPIActorNeedsTheAPIsProof: a user command claiming the HTTP API's
// actor ("api:<name>") is decided only with the API's proof under the
// installation's actor key, made within the duplicate window of its
// message (in review, a NATS user recorded its stop as api:default's).
// The API's own commands, and other actors without a proof, are decided.
func TestAPIActorNeedsTheAPIsProof(t *testing.T) {
	core := testenv.StartCore(t, testenv.CoreOptions{})
	names := events.NewNames("")
	const ws = "proven"
	apiClient := core.APIClient(t)
	if o := send(t, apiClient, fsm.Command{Type: fsm.Create, Workspace: ws, Actor: "api:ci"}); o.Outcome != fsm.Accepted || o.Actor != "api:ci" {
		t.Fatalf("the API's create: %+v", o)
	}
	body := func(id, actor string) string {
		return fmt.Sprintf(`{"id":%q,"type":"stop","workspace":%q,"actor":%q}`, id, ws, actor)
	}
	otherKey := make([]byte, events.ActorKeySize)
	now := time.Now()
	for _, tc := range []struct {
		name, actor, want string
		proof             func(data string) string
	}{
		{name: "NoProof", actor: "api:default", want: "carries no Turnstile-Actor-Proof header"},
		{name: "CaseVariant", actor: "API:default", want: "carries no Turnstile-Actor-Proof header"},
		{name: "OtherKey", actor: "api:default", want: "does not verify",
			proof: func(data string) string { return events.ActorProof(otherKey, now, []byte(data)) }},
		{name: "AnotherCommandsProof", actor: "api:default", want: "does not verify",
			proof: func(string) string { return events.ActorProof(core.ActorKey, now, []byte(body("x", "api:default"))) }},
		{name: "Garbled", actor: "api:default", want: "is not <unix milliseconds>.<signature>",
			proof: func(string) string { return "soon.abc" }},
		// What a copy of one of the API's commands, read from the stream
		// and sent again later (under a new id: the old one is decided),
		// would carry.
		{name: "MadeLongBefore", actor: "api:default", want: "apart from when the command was stored",
			proof: func(data string) string { return events.ActorProof(core.ActorKey, now.Add(-time.Hour), []byte(data)) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := client.NewCommandID()
			data := body(id, tc.actor)
			var headers []string
			if tc.proof != nil {
				headers = []string{events.ActorProofHeader, tc.proof(data)}
			}
			publishRaw(t, core, names.Command(ws), id, data, headers...)
			o := storedOutcome(t, core, id)
			if !isRejection(o, fsm.CodeInvalid) || !strings.Contains(o.Rejection.Message, "HTTP API's") ||
				!strings.Contains(o.Rejection.Message, tc.want) || o.EventSeq != 0 || o.Actor != "" {
				t.Fatalf("stop claiming actor %s: %+v %+v", tc.actor, o, o.Rejection)
			}
		})
	}
	h, err := core.Store.Load(context.Background(), ws)
	if err != nil {
		t.Fatal(err)
	}
	if h.State.Status != fsm.Provisioning || h.State.Seq != 1 {
		t.Fatalf("an unproven API actor changed the workspace: %+v", h.State)
	}
	// A proof made now, under the key, is the API's.
	id := client.NewCommandID()
	data := body(id, "api:default")
	publishRaw(t, core, names.Command(ws), id, data, events.ActorProofHeader, events.ActorProof(core.ActorKey, time.Now(), []byte(data)))
	if o := storedOutcome(t, core, id); o.Outcome != fsm.Accepted || o.Actor != "api:default" {
		t.Fatalf("a proven API actor: %+v %+v", o, o.Rejection)
	}
	// An actor of one's own needs no proof.
	if o := send(t, core.Client(t, "cli:bob"), fsm.Command{Type: fsm.Start, Workspace: ws}); isRejection(o, fsm.CodeInvalid) || o.Actor != "cli:bob" {
		t.Fatalf("start as cli:bob: %+v %+v", o, o.Rejection)
	}
	testenv.Eventually(t, 20*time.Second, "every command handled", func() bool { return consumerDone(core) })
	checkLog(t, core)
}

// TestAPIActorLookalikes: an actor a reader takes for the API's is the
// API's, and needs its proof: in review a NATS user's stop was recorded as
// " api:default", "API：default" (a fullwidth colon), "аpi:default" (a
// Cyrillic а) or "\u200bapi:default", each shown in the history as
// api:default. Such actors are refused without the proof like "api:".
func TestAPIActorLookalikes(t *testing.T) {
	core := testenv.StartCore(t, testenv.CoreOptions{})
	names := events.NewNames("")
	const ws = "lookalike"
	if o := send(t, core.APIClient(t), fsm.Command{Type: fsm.Create, Workspace: ws, Actor: "api:ci"}); o.Outcome != fsm.Accepted {
		t.Fatalf("the API's create: %+v", o)
	}
	for _, tc := range []struct{ name, actor string }{
		{"LeadingSpace", " api:default"},
		{"TabBefore", "\tapi:default"},
		{"SpaceBeforeColon", "api :default"},
		{"ZeroWidthSpace", "\u200bapi:default"},
		{"ZeroWidthJoinerInside", "a\u200dpi:default"},
		{"SoftHyphen", "\u00adapi:default"},
		{"FullwidthColon", "api\uff1adefault"},
		{"FullwidthLetters", "\uff41\uff50\uff49:default"},
		{"RatioColon", "api\u2236default"},
		{"ModifierColon", "api\ua789default"},
		{"CyrillicA", "\u0430pi:default"},
		{"CyrillicER", "a\u0440i:default"},
		{"CyrillicI", "ap\u0456:default"},
		{"DotlessI", "ap\u0131:default"},
		{"GreekRho", "a\u03c1i:default"},
		{"MathBold", "\U0001d41a\U0001d429\U0001d422:default"},
		{"CombiningMark", "a\u0323pi:default"},
		{"RightToLeftOverride", "\u202etluafed:ipa"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := client.NewCommandID()
			b, err := json.Marshal(map[string]string{"id": id, "type": "stop", "workspace": ws, "actor": tc.actor})
			if err != nil {
				t.Fatal(err)
			}
			publishRaw(t, core, names.Command(ws), id, string(b))
			o := storedOutcome(t, core, id)
			if !isRejection(o, fsm.CodeInvalid) || o.EventSeq != 0 || o.Actor != "" {
				t.Fatalf("stop claiming actor %q: %+v %+v", tc.actor, o, o.Rejection)
			}
		})
	}
	h, err := core.Store.Load(context.Background(), ws)
	if err != nil {
		t.Fatal(err)
	}
	if h.State.Seq != 1 {
		t.Fatalf("a lookalike of the API's actor changed the workspace: %+v", h.State)
	}
	// Actors that only contain the letters, or start otherwise, are a
	// sender's own.
	for _, actor := range []string{"apiary:bob", "cli:api:bob", "grapi:x", "a.p.i:x"} {
		if o := send(t, core.Client(t, actor), fsm.Command{Type: fsm.Stop, Workspace: ws}); isRejection(o, fsm.CodeInvalid) || o.Actor != actor {
			t.Fatalf("stop as %q: %+v %+v", actor, o, o.Rejection)
		}
	}
	testenv.Eventually(t, 20*time.Second, "every command handled", func() bool { return consumerDone(core) })
	checkLog(t, core)
}

// TestAPICommandCopied: a NATS user may read the API's commands, proof
// and all, from the command stream. A copy sent again within the window
// is the same command, answered with its outcome (without a Nats-Msg-Id)
// or dropped by the stream (with its id); under another id it is refused
// and records nothing as the API's.
func TestAPICommandCopied(t *testing.T) {
	core := testenv.StartCore(t, testenv.CoreOptions{})
	names := events.NewNames("")
	const ws = "copied"
	apiClient := core.APIClient(t)
	if o := send(t, apiClient, fsm.Command{Type: fsm.Create, Workspace: ws, Actor: "api:ci"}); o.Outcome != fsm.Accepted {
		t.Fatalf("the API's create: %+v", o)
	}
	sys := core.SystemClient(t, "test-provisioner")
	report := func(typ fsm.CommandType, gen uint64) {
		t.Helper()
		if o := send(t, sys, fsm.Command{Type: typ, Workspace: ws, Generation: gen}); o.Outcome != fsm.Accepted {
			t.Fatalf("%s: %+v", typ, o)
		}
	}
	report(fsm.ProvisionSucceeded, 1)
	stop := send(t, apiClient, fsm.Command{Type: fsm.Stop, Workspace: ws, Actor: "api:ci"})
	if stop.Outcome != fsm.Accepted {
		t.Fatalf("the API's stop: %+v", stop)
	}
	report(fsm.StopSucceeded, stop.Generation)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cons, err := core.JS.OrderedConsumer(ctx, names.CommandStream(), jetstream.OrderedConsumerConfig{FilterSubjects: []string{names.StoredCommands(ws)}})
	if err != nil {
		t.Fatal(err)
	}
	var copied jetstream.Msg
	for copied == nil {
		m, err := cons.Next(jetstream.FetchMaxWait(10 * time.Second))
		if err != nil {
			t.Fatal(err)
		}
		if m.Headers().Get(jetstream.MsgIDHeader) == stop.CommandID {
			copied = m
		}
	}
	proof := copied.Headers().Get(events.ActorProofHeader)
	// Started again, so that a stop decided anew would be accepted.
	start := send(t, core.Client(t, "cli:bob"), fsm.Command{Type: fsm.Start, Workspace: ws})
	if start.Outcome != fsm.Accepted {
		t.Fatalf("start: %+v", start)
	}
	report(fsm.ProvisionSucceeded, start.Generation)
	before, err := core.Store.Load(ctx, ws)
	if err != nil {
		t.Fatal(err)
	}
	publishRaw(t, core, names.Command(ws), "", string(copied.Data()), events.ActorProofHeader, proof)
	publishRaw(t, core, names.Command(ws), stop.CommandID, string(copied.Data()), events.ActorProofHeader, proof)
	other := client.NewCommandID()
	publishRaw(t, core, names.Command(ws), other, string(copied.Data()), events.ActorProofHeader, proof)
	if o := storedOutcome(t, core, other); !isRejection(o, fsm.CodeInvalid) || !strings.Contains(o.Rejection.Message, "differs from the command id") || o.Actor != "" {
		t.Fatalf("a copy under another id: %+v %+v", o, o.Rejection)
	}
	testenv.Eventually(t, 20*time.Second, "every command handled", func() bool { return consumerDone(core) })
	h, err := core.Store.Load(ctx, ws)
	if err != nil {
		t.Fatal(err)
	}
	if h.State.Status != fsm.Running || h.State.Seq != before.State.Seq {
		t.Fatalf("a copy of the API's stop was decided again: %+v (before the copies: %+v)", h.State, before.State)
	}
	if o := storedOutcome(t, core, stop.CommandID); o.EventSeq != stop.EventSeq || o.Actor != "api:ci" {
		t.Fatalf("the stop's outcome changed: %+v, was %+v", o, stop)
	}
	checkLog(t, core)
}

// TestForgedPinIDIsNotTheEngines: the server appends a pinned delivery's
// Nats-Pin-Id to the headers the command was stored with. A command
// stored with one of its own (a NATS user can publish it where no relay
// refuses it: --nats-url) made the engine take the sender's value for its
// pin, and at a rebalance it then left its real pin in place, thinking
// another engine pinned: the next owner waited out the pinned TTL.
func TestForgedPinIDIsNotTheEngines(t *testing.T) {
	core := testenv.StartCore(t, testenv.CoreOptions{})
	names := events.NewNames("")
	const ws = "pinned"
	id := client.NewCommandID()
	publishRaw(t, core, names.Command(ws), id, fmt.Sprintf(`{"id":%q,"type":"create","workspace":%q}`, id, ws), "Nats-Pin-Id", "forged")
	if o := storedOutcome(t, core, id); o.Outcome != fsm.Accepted {
		t.Fatalf("create: %+v %+v", o, o.Rejection)
	}
	k := events.Partition(ws, events.DefaultPartitions)
	var pinned string
	for _, g := range consumerInfo(t, core.JS, ws).PriorityGroups {
		if g.Group == engine.PriorityGroup {
			pinned = g.PinnedClientID
		}
	}
	if got := core.Engines[0].PinForTest(k, names.CommandStream()); pinned == "" || got != pinned {
		t.Fatalf("the engine's pin of partition %d is %q, the server's %q", k, got, pinned)
	}
}
