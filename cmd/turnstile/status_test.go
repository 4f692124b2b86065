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
