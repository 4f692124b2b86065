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
