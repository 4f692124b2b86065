package main

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/turnstile-dev/turnstile/status"
)

// TestStatusOverHTTP: with --api-url (here its variable, from a directory
// without serve's files) status asks the API's GET /v1/cluster and shows
// it as it shows what it reads from JetStream, rather than going to NATS
// at the default address.
func TestStatusOverHTTP(t *testing.T) {
	rep := status.Report{
		Nodes:      []status.Node{{Name: "fake-node-1", Version: "2.15.2", JetStream: true, Connected: true, Leads: []string{"FAKE_EVENTS"}}},
		Streams:    []status.Stream{{Name: "FAKE_EVENTS", Replicas: 1, Leader: "fake-node-1", Messages: 7, LastSeq: 7}},
		Partitions: []status.Partition{{ID: 0, Owner: "engine-x"}},
		Engines:    []status.Engine{{Name: "engine-x", ID: "e-1", Since: time.Date(2026, 12, 5, 3, 0, 0, 0, time.UTC), Partitions: []int{0}}},
	}
	fake := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet || r.URL.Path != "/v1/cluster" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(rep)
	})
	code, out, errs := runCLI(t, fake.env(t), "status")
	if code != 0 || !strings.Contains(out, "fake-node-1") || !strings.Contains(out, "FAKE_EVENTS") || !strings.Contains(out, "engine-x") {
		t.Fatalf("status: exit %d\nstdout: %s\nstderr: %s", code, out, errs)
	}
	code, out, errs = runCLI(t, fake.env(t), "status", "-o", "json")
	var got status.Report
	if code != 0 || json.Unmarshal([]byte(out), &got) != nil || len(got.Nodes) != 1 || got.Nodes[0].Name != "fake-node-1" {
		t.Fatalf("status -o json: exit %d\nstdout: %s\nstderr: %s", code, out, errs)
	}
	if reqs, _ := fake.requests(); !slices.Equal(reqs, []string{"GET /v1/cluster", "GET /v1/cluster"}) {
		t.Fatalf("the API got %v, want GET /v1/cluster twice", reqs)
	}
}

// status shows each engine's P in its own column, the stream's beside the
// one that differs, and names that engine under attention; -o json carries
// p and p_mismatch as GET /v1/cluster does.
func TestStatusShowsEngineP(t *testing.T) {
	since := time.Date(2026, 12, 5, 3, 0, 0, 0, time.UTC)
	rep := status.Report{
		Nodes:      []status.Node{{Name: "fake-node-1", JetStream: true, Connected: true, Leads: []string{}}},
		Streams:    []status.Stream{},
		Partitions: []status.Partition{{ID: 0, Owner: "engine-a"}, {ID: 1, Owner: "engine-a"}},
		P:          2,
		Engines: []status.Engine{
			{Name: "engine-a", ID: "e-a", Since: since, Partitions: []int{0, 1}, P: 2},
			{Name: "engine-b", ID: "e-b", Since: since, Partitions: []int{}, P: 8, PMismatch: true},
			{Name: "engine-c", ID: "e-c", Since: since, Partitions: []int{}},
		},
	}
	fake, out, fields := statusOf(t, rep)
	// ENGINE ID SINCE P PROVISIONER PARTITIONS, P being one field or
	// three, PROVISIONER one (none announced: -).
	for name, want := range map[string]string{"ENGINE": "P", "engine-a": "2", "engine-b": "8 (STREAM HAS 2)", "engine-c": "-"} {
		f := fields[name]
		if len(f) < 6 || strings.Join(f[3:len(f)-2], " ") != want {
			t.Errorf("row %q, want P %q\n%s", strings.Join(f, " "), want, out)
		}
	}
	if !strings.Contains(out, "attention: engine engine-b (e-b) has P=8, the command stream 2") ||
		strings.Contains(out, "engine engine-a (e-a) has") || strings.Contains(out, "engine engine-c (e-c) has") {
		t.Errorf("want one attention line, naming engine-b:\n%s", out)
	}
	code, out, errs := runCLI(t, fake.env(t), "status", "-o", "json")
	var got struct {
		P       int `json:"p"`
		Engines []struct {
			Name      string `json:"name"`
			P         *int   `json:"p"`
			PMismatch *bool  `json:"p_mismatch"`
		} `json:"engines"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &got) != nil || got.P != 2 || len(got.Engines) != 3 {
		t.Fatalf("status -o json: exit %d\nstdout: %s\nstderr: %s", code, out, errs)
	}
	if e := got.Engines[1]; e.P == nil || *e.P != 8 || e.PMismatch == nil || !*e.PMismatch {
		t.Errorf("status -o json: engine-b is not p 8, p_mismatch true:\n%s", out)
	}
	if e := got.Engines[2]; e.P != nil || e.PMismatch == nil || *e.PMismatch {
		t.Errorf("status -o json: engine-c has p, or p_mismatch is not false:\n%s", out)
	}
}

// statusOf runs `turnstile status` against a fake API answering with rep,
// and returns the fake (for more commands), the output and its rows by
// first field.
func statusOf(t *testing.T, rep status.Report) (*fakeAPI, string, map[string][]string) {
	t.Helper()
	fake := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(rep)
	})
	code, out, errs := runCLI(t, fake.env(t), "status")
	if code != 0 {
		t.Fatalf("status: exit %d\nstdout: %s\nstderr: %s", code, out, errs)
	}
	rows := map[string][]string{}
	for line := range strings.Lines(out) {
		if f := strings.Fields(line); len(f) > 0 {
			rows[f[0]] = f
		}
	}
	return fake, out, rows
}
