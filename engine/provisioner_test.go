package engine_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/turnstile-dev/turnstile/engine"
	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/internal/testenv"
)

// An engine announces the container engine its serve provisions on
// (Config.Provisioner and ProvisionerHint) in its member entry, as the
// provisioner and provisioner_hint keys serve and turnstile status read.
func TestMemberAnnouncesProvisioner(t *testing.T) {
	const id, hint = "docker ABCD:EFGH:IJKL", "daemon vm at unix:///var/run/docker.sock"
	core := testenv.StartCore(t, testenv.CoreOptions{Engine: engine.Config{Name: "host/1", Provisioner: id, ProvisionerHint: hint}})
	names := events.NewNames("")
	var ms []engine.Member
	testenv.Eventually(t, 20*time.Second, "the engine in the members", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var err error
		if ms, err = engine.ReadMembers(ctx, core.JS, names, events.DefaultEngineDurable); err != nil {
			t.Fatal(err)
		}
		return len(ms) == 1
	})
	if m := ms[0]; m.Name != "host/1" || m.Provisioner != id || m.ProvisionerHint != hint {
		t.Errorf("member %+v: want name host/1, provisioner %q, hint %q", m, id, hint)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	kv, err := core.JS.KeyValue(ctx, engine.MembersBucket(names, events.DefaultEngineDurable))
	if err != nil {
		t.Fatal(err)
	}
	e, err := kv.Get(ctx, ms[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	var wire map[string]any
	if err := json.Unmarshal(e.Value(), &wire); err != nil {
		t.Fatal(err)
	}
	if wire["provisioner"] != id || wire["provisioner_hint"] != hint {
		t.Errorf("member entry %s: want provisioner %q and provisioner_hint %q", e.Value(), id, hint)
	}
}
