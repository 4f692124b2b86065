package status_test

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/turnstile-dev/turnstile/engine"
	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/internal/testenv"
	"github.com/turnstile-dev/turnstile/status"
)

// A report shows each live engine's announced P and flags the one whose P
// is not the command stream's: a real engine (P=16, the stream's), a
// member announcing P=8 (a serve started with another --partitions, as
// the engine tests make one) and one of a release that announced none.
func TestEnginesP(t *testing.T) {
	ttl := time.Second
	core := testenv.StartCore(t, testenv.CoreOptions{Engine: engine.Config{MemberTTL: ttl, PinnedTTL: 2 * time.Second}})
	names := events.NewNames("")
	kv, err := core.JS.KeyValue(context.Background(), engine.MembersBucket(names, events.DefaultEngineDurable))
	if err != nil {
		t.Fatal(err)
	}
	since := time.Now().UTC()
	other, err := json.Marshal(engine.Member{ID: "other", Name: "other/8", Since: since, Partitions: []int{}, P: 8})
	if err != nil {
		t.Fatal(err)
	}
	// Written by hand: Member marshals P only when set, as an older
	// release's entry lacks it.
	older := []byte(`{"id":"older","name":"older/1","since":"` + since.Format(time.RFC3339Nano) + `","partitions":[]}`)

	rep := announceAndRead(t, core, kv, map[string][]byte{"other": other, "older": older},
		"a report listing the engine and both members", func(rep status.Report) bool { return len(rep.Engines) == 3 })
	if rep.P != events.DefaultPartitions {
		t.Errorf("report P %d, want the stream's %d", rep.P, events.DefaultPartitions)
	}
	byName := map[string]status.Engine{}
	for _, e := range rep.Engines {
		byName[e.Name] = e
	}
	mine := rep.Engines[slices.IndexFunc(rep.Engines, func(e status.Engine) bool { return e.Name != "other/8" && e.Name != "older/1" })]
	for _, tc := range []struct {
		name     string
		got      status.Engine
		p        int
		mismatch bool
	}{
		{"RealEngine", mine, events.DefaultPartitions, false},
		{"OtherP", byName["other/8"], 8, true},
		{"OlderRelease", byName["older/1"], 0, false},
	} {
		if tc.got.P != tc.p || tc.got.PMismatch != tc.mismatch {
			t.Errorf("%s: engine %+v: P %d, p_mismatch %v; want %d, %v", tc.name, tc.got, tc.got.P, tc.got.PMismatch, tc.p, tc.mismatch)
		}
	}
	if got := rep.OtherP(); len(got) != 1 || !strings.Contains(got[0], "other/8 (other) has P=8, the command stream 16") {
		t.Errorf("OtherP() = %q, want one line naming other/8 with P=8 against 16", got)
	}

	// The JSON GET /v1/cluster serves carries both.
	b, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	var wire struct {
		P       int `json:"p"`
		Engines []map[string]any
	}
	if err := json.Unmarshal(b, &wire); err != nil {
		t.Fatal(err)
	}
	if wire.P != events.DefaultPartitions {
		t.Errorf("JSON p %d, want %d:\n%s", wire.P, events.DefaultPartitions, b)
	}
	for _, e := range wire.Engines {
		want := map[string]any{"p": float64(events.DefaultPartitions), "p_mismatch": false}
		switch e["name"] {
		case "other/8":
			want = map[string]any{"p": float64(8), "p_mismatch": true}
		case "older/1":
			want = map[string]any{"p": nil, "p_mismatch": false}
		}
		for k, v := range want {
			if e[k] != v {
				t.Errorf("JSON engine %v: %s is %v, want %v", e["name"], k, e[k], v)
			}
		}
	}
}

// A report carries each live engine's announced container engine, and
// says under attention when live engines announce different ones: a real
// engine on "docker AAAA", a member announcing another identity, the
// same, or none, beside one of a release that announced none.
func TestEnginesProvisioner(t *testing.T) {
	ttl := time.Second
	const mine, mineHint = "docker AAAA", "daemon host-a at unix:///var/run/docker.sock"
	core := testenv.StartCore(t, testenv.CoreOptions{Engine: engine.Config{MemberTTL: ttl, PinnedTTL: 2 * time.Second,
		Name: "host-a/1", Provisioner: mine, ProvisionerHint: mineHint}})
	names := events.NewNames("")
	kv, err := core.JS.KeyValue(context.Background(), engine.MembersBucket(names, events.DefaultEngineDurable))
	if err != nil {
		t.Fatal(err)
	}
	since := time.Now().UTC()
	older := []byte(`{"id":"older","name":"older/1","since":"` + since.Format(time.RFC3339Nano) + `","partitions":[],"p":16}`)
	for _, tc := range []struct {
		name, provisioner string
		attention         bool
	}{
		{"OtherEngine", "docker BBBB", true},
		{"SameEngine", mine, false},
		{"NoneAnnounced", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			other, err := json.Marshal(engine.Member{ID: "other", Name: "host-b/2", Since: since, Partitions: []int{}, P: 16,
				Provisioner: tc.provisioner, ProvisionerHint: map[bool]string{true: "daemon host-b at tcp://host-b:2376"}[tc.provisioner != ""]})
			if err != nil {
				t.Fatal(err)
			}
			rep := announceAndRead(t, core, kv, map[string][]byte{"other": other, "older": older},
				"a report listing the engine and both members as announced", func(rep status.Report) bool {
					i := slices.IndexFunc(rep.Engines, func(e status.Engine) bool { return e.Name == "host-b/2" })
					return len(rep.Engines) == 3 && i >= 0 && rep.Engines[i].Provisioner == tc.provisioner
				})
			byName := map[string]status.Engine{}
			for _, e := range rep.Engines {
				byName[e.Name] = e
			}
			if e := byName["host-a/1"]; e.Provisioner != mine || e.ProvisionerHint != mineHint {
				t.Errorf("the real engine %+v: want provisioner %q, hint %q", e, mine, mineHint)
			}
			if e := byName["older/1"]; e.Provisioner != "" || e.ProvisionerHint != "" {
				t.Errorf("the older member %+v announces a provisioner", e)
			}
			got := rep.OtherProvisioners()
			switch {
			case tc.attention && (len(got) != 1 || !strings.Contains(got[0], "2 different container engines") ||
				!strings.Contains(got[0], "host-a/1 on docker AAAA (daemon host-a at unix:///var/run/docker.sock)") ||
				!strings.Contains(got[0], "host-b/2 on docker BBBB (daemon host-b at tcp://host-b:2376)") ||
				!strings.Contains(got[0], "restart the serves onto one Docker engine")):
				t.Errorf("OtherProvisioners() = %q, want one line naming both serves and engines", got)
			case !tc.attention && len(got) != 0:
				t.Errorf("OtherProvisioners() = %q, want none", got)
			}

			// The JSON GET /v1/cluster serves: provisioner when announced.
			b, err := json.Marshal(rep)
			if err != nil {
				t.Fatal(err)
			}
			var wire struct{ Engines []map[string]any }
			if err := json.Unmarshal(b, &wire); err != nil {
				t.Fatal(err)
			}
			want := map[string]any{"host-a/1": mine, "host-b/2": tc.provisioner, "older/1": nil}
			if tc.provisioner == "" {
				want["host-b/2"] = nil
			}
			for _, e := range wire.Engines {
				if name, _ := e["name"].(string); e["provisioner"] != want[name] {
					t.Errorf("JSON engine %s: provisioner %v, want %v", name, e["provisioner"], want[name])
				}
			}
		})
	}
}

// announceAndRead puts the member entries (key: value) and reads a report
// until done says it shows them. The bucket's entries last the engine's
// MemberTTL: each look announces them afresh first.
func announceAndRead(t *testing.T, core *testenv.Core, kv jetstream.KeyValue, entries map[string][]byte, what string,
	done func(status.Report) bool) status.Report {
	t.Helper()
	var rep status.Report
	testenv.Eventually(t, 20*time.Second, what, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for id, raw := range entries {
			if _, err := kv.Put(ctx, id, raw); err != nil {
				t.Fatalf("announce %s: %v", id, err)
			}
		}
		var err error
		if rep, err = status.Read(ctx, core.NC, events.NewNames("")); err != nil {
			t.Fatal(err)
		}
		return done(rep)
	})
	return rep
}
