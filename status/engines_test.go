package status_test

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

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

	// The bucket's entries last ttl: each look announces both afresh
	// first, and looks again if one was gone by the read.
	var rep status.Report
	testenv.Eventually(t, 20*time.Second, "a report listing the engine and both members", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for id, raw := range map[string][]byte{"other": other, "older": older} {
			if _, err := kv.Put(ctx, id, raw); err != nil {
				t.Fatalf("announce %s: %v", id, err)
			}
		}
		if rep, err = status.Read(ctx, core.NC, names); err != nil {
			t.Fatal(err)
		}
		return len(rep.Engines) == 3
	})
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
