package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/turnstile-dev/turnstile/projector"
)

func TestRebuildBar(t *testing.T) {
	var buf bytes.Buffer
	bar := rebuildBar(&buf)
	bar(projector.Progress{Phase: "read", Done: 500, Total: 1000})
	bar(projector.Progress{Phase: "index", Done: 1000, Total: 1000})
	if out := buf.String(); !strings.Contains(out, "rebuild: ") || !strings.Contains(out, "1000") {
		t.Fatalf("progress bar drew %q", out)
	}
	bar(projector.Progress{Phase: "done", Done: 1000, Total: 1000})
}

// TestAuditBar: audit --all's bar (either path) is drawn once the total
// is known and cleared by finish.
func TestAuditBar(t *testing.T) {
	var buf bytes.Buffer
	progress, finish := auditBar(&buf)
	progress(0, 0) // an empty stream: no total, no bar
	if buf.Len() != 0 {
		t.Fatalf("a bar without a total: %q", buf.String())
	}
	progress(0, 2048)
	progress(256, 2048)
	drawn := buf.String()
	if !strings.Contains(drawn, "audit") || !strings.Contains(drawn, "/2048") {
		t.Fatalf("progress bar drew %q", drawn)
	}
	finish()
	if cleared := strings.TrimPrefix(buf.String(), drawn); strings.TrimSpace(cleared) != "" || !strings.HasSuffix(cleared, "\r") {
		t.Fatalf("finish wrote %q, want the bar cleared", cleared)
	}
	_, finish = auditBar(&buf)
	finish() // no bar drawn: nothing to clear
}
