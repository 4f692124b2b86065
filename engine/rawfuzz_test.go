package engine_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/internal/testenv"
)

// issue 12 items 2-4 (acceptance): random raw messages on every subject a
// NATS user may publish to (<prefix>.cmd.>), mixing legal user commands,
// forged system reports, ids in the reserved namespace, hostile reply
// subjects and garbage, while a provisioner answers on the system subject.
// Afterwards no workspace is stuck in flight, no forged report or reserved
// id left a trace in any history, nothing was written on an event subject
// for a reply header, and every history replays legally.
func TestRandomRawUserTraffic(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 12))
	core := testenv.StartCore(t, testenv.CoreOptions{})
	prov := startProvisioner(t, core, func(w fsm.Workspace) bool { return w.Generation%4 == 0 })
	names := events.NewNames("")
	wss := []string{"fz-a", "fz-b", "fz-c", "fz-d"}
	user := core.Client(t, "user")
	for _, ws := range wss {
		send(t, user, fsm.Command{Type: fsm.Create, Workspace: ws})
	}
	userTypes := fsm.UserCommands()
	sysTypes := fsm.SystemCommands()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const n = 300
	for i := range n {
		ws := wss[rng.IntN(len(wss))]
		id := fmt.Sprintf("fz-%d", i)
		var body string
		subject := names.Command(ws)
		headers := map[string]string{}
		switch k := rng.IntN(7); k {
		case 0, 1: // a legal user command
			typ := userTypes[rng.IntN(len(userTypes))]
			spec := ""
			if typ == fsm.Configure {
				spec = `,"spec":{"image":"x:1"}`
			}
			body = fmt.Sprintf(`{"id":%q,"type":%q,"workspace":%q,"actor":"user"%s}`, id, typ, ws, spec)
		case 2: // a forged system report, for a generation near the current one
			typ := sysTypes[rng.IntN(len(sysTypes))]
			extra := ""
			if typ == fsm.ProvisionSucceeded {
				extra = `,"container_id":"deadbeef"`
			}
			body = fmt.Sprintf(`{"id":%q,"type":%q,"workspace":%q,"actor":"forger","generation":%d%s}`, id, typ, ws, 1+rng.IntN(6), extra)
		case 3: // a user command under a report's id
			id = fmt.Sprintf("sys-provision-%s-g%d", ws, 1+rng.IntN(6))
			body = fmt.Sprintf(`{"id":%q,"type":"start","workspace":%q,"actor":"forger"}`, id, ws)
		case 4: // a hostile reply subject
			headers[engineReplyHeader] = []string{names.Event(wss[rng.IntN(len(wss))]), names.Outcome("x"), "_TURNSTILE_INBOX.y", names.System(ws)}[rng.IntN(4)]
			body = fmt.Sprintf(`{"id":%q,"type":"start","workspace":%q,"actor":"user"}`, id, ws)
		case 5: // garbage
			b := make([]byte, rng.IntN(64))
			for j := range b {
				b[j] = byte(rng.IntN(256))
			}
			body = string(b)
		default: // a wrong subject for the body
			subject = names.Command(wss[rng.IntN(len(wss))])
			body = fmt.Sprintf(`{"id":%q,"type":"stop","workspace":%q}`, id, ws)
		}
		m := nats.NewMsg(subject)
		m.Data = []byte(body)
		if rng.IntN(4) > 0 {
			m.Header.Set(jetstream.MsgIDHeader, id)
		}
		for k, v := range headers {
			m.Header.Set(k, v)
		}
		if _, err := core.JS.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	testenv.Eventually(t, 2*time.Minute, "no workspace in flight", func() bool {
		for _, ws := range wss {
			h, err := core.Store.Load(ctx, ws)
			if err != nil {
				t.Fatal(err)
			}
			if h.State.Status.InFlight() {
				return false
			}
		}
		return consumerDone(core)
	})
	quiesce(t, core, prov)
	_, outcomes := checkLog(t, core)
	err := core.Store.Replay(ctx, 1, 0, func(r events.Record) error {
		if e := r.Event; e != nil {
			if e.Actor == "forger" || e.Payload.ContainerID == "deadbeef" {
				t.Errorf("a forged message made event %s of %s: %+v", e.Type, e.Workspace, e)
			}
			if r.Event.Workspace == "" || !strings.HasPrefix(e.Workspace, "fz-") {
				t.Errorf("event on an unexpected workspace: %+v", e)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for id, o := range outcomes {
		if fsm.IsSystemID(id) && !o.CommandType.IsSystem() {
			t.Errorf("a user command's outcome is stored under the reserved id %s: %+v", id, o)
		}
		if o.Actor == "forger" && o.Outcome != fsm.Rejected {
			t.Errorf("a forged message was not refused: %+v", o)
		}
	}
	// A reply published on an event subject would have failed to decode as
	// an event: checkLog's replay would have failed.
}

// engineReplyHeader is events.ReplyHeader, spelled as a raw client would.
const engineReplyHeader = "Turnstile-Reply"
