package main

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/turnstile-dev/turnstile/internal/testenv"
)

// TestLogDurationsAsStrings: under the JSON handler a time.Duration is
// logged as "1.5s", not as 1500000000 nanoseconds, in groups too (issue 14
// item 7).
func TestLogDurationsAsStrings(t *testing.T) {
	for _, format := range []string{"json", "text"} {
		var buf bytes.Buffer
		a := &app{streams: streams{err: &buf}, logLevel: "info", logFormat: format}
		log, err := a.logger()
		if err != nil {
			t.Fatal(err)
		}
		log.Info("done", "took", 1500*time.Millisecond, slog.Group("wait", "timeout", 2*time.Minute))
		got := buf.String()
		if !strings.Contains(got, "1.5s") || !strings.Contains(got, "2m0s") || strings.Contains(got, "1500000000") {
			t.Errorf("%s: durations not logged as strings: %s", format, got)
		}
		if format == "json" {
			var line struct {
				Took string            `json:"took"`
				Wait map[string]string `json:"wait"`
			}
			if err := json.Unmarshal([]byte(got), &line); err != nil || line.Took != "1.5s" || line.Wait["timeout"] != "2m0s" {
				t.Errorf("json line %s: %+v, %v", got, line, err)
			}
		}
	}
}

// TestServeJSONLogsAndBuildInfo: with --log-format json serve's stderr is
// only JSON lines (no human banner), request durations in them are
// strings, and /metrics has turnstile_build_info and the HTTP request
// metrics (issue 14 item 7).
func TestServeJSONLogsAndBuildInfo(t *testing.T) {
	s := startInProcessServe(t, map[string]string{"TURNSTILE_LOG_FORMAT": "json", "TURNSTILE_LOG_LEVEL": "debug"})
	token, err := os.ReadFile(filepath.Join(s.dir, "api-token"))
	if err != nil {
		t.Fatal(err)
	}
	var metrics string
	testenv.Eventually(t, time.Minute, "serve to log that it serves, and /metrics to answer", func() bool {
		req, err := http.NewRequest("GET", s.httpURL+"/metrics", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		metrics = string(b)
		return resp.StatusCode == http.StatusOK && strings.Contains(s.out.String(), `"msg":"serving"`) &&
			strings.Contains(s.out.String(), `"msg":"http"`)
	})
	sawDuration := false
	for _, line := range strings.Split(strings.TrimSpace(s.out.String()), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("a line on stderr that is not JSON: %q", line)
		}
		if d, ok := rec["duration"]; ok {
			str, isString := d.(string)
			if _, err := time.ParseDuration(str); !isString || err != nil {
				t.Errorf("duration %v (%T) is not a duration string: %s", d, d, line)
			}
			sawDuration = true
		}
	}
	if !sawDuration {
		t.Error("no log line with a duration")
	}
	for _, want := range []string{"turnstile_build_info{commit=", `go_version="go`, "turnstile_http_requests_total{", "turnstile_http_request_duration_seconds_bucket{"} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}
