package main

import (
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestGrafanaDashboard: docs/grafana-dashboard.json parses, and every
// metric its queries use is in docs/operations.md's metrics table, so the
// dashboard cannot drift from the metrics serve documents (issue 14 item 7).
func TestGrafanaDashboard(t *testing.T) {
	raw, err := os.ReadFile("../../docs/grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Title  string `json:"title"`
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("docs/grafana-dashboard.json: %v", err)
	}
	ops, err := os.ReadFile("../../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	documented := map[string]bool{}
	for _, m := range regexp.MustCompile("(?m)^\\| `(turnstile_[a-z_]+)` \\|").FindAllStringSubmatch(string(ops), -1) {
		documented[m[1]] = true
	}
	if len(documented) < 10 {
		t.Fatalf("found only %d metrics in docs/operations.md's table", len(documented))
	}
	used := map[string]bool{}
	name := regexp.MustCompile(`\bturnstile_[a-z_]+`)
	for _, p := range dash.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			for _, m := range name.FindAllString(tg.Expr, -1) {
				base := m
				for _, suffix := range []string{"_bucket", "_sum", "_count"} {
					if b, ok := strings.CutSuffix(m, suffix); ok && documented[b] {
						base = b
					}
				}
				if !documented[base] {
					t.Errorf("panel %q queries %s, which docs/operations.md's metrics table does not list", p.Title, m)
				}
				used[base] = true
			}
		}
	}
	// The panels the issue asks for.
	for _, m := range []string{"turnstile_commands_total", "turnstile_command_latency_seconds", "turnstile_commit_batch_commands",
		"turnstile_projector_lag_messages", "turnstile_actions_total", "turnstile_quarantined_messages_total",
		"turnstile_http_requests_total", "turnstile_http_request_duration_seconds", "turnstile_build_info",
		"turnstile_engine_partitions", "turnstile_engine_partition_takeovers_total"} {
		if !used[m] {
			t.Errorf("the dashboard does not show %s", m)
		}
	}
}
