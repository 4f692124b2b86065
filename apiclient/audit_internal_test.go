package apiclient

import (
	"bufio"
	"errors"
	"strings"
	"testing"
)

// TestReadAuditStreamBoundsLines: a line longer than the bound is an
// error naming it, not a read of unbounded size.
func TestReadAuditStreamBoundsLines(t *testing.T) {
	in := `{"progress":{"seq":0,"last":1}}` + "\n" + `{"report":{"violations":["` + strings.Repeat("x", 4096) + `"]}}` + "\n"
	_, err := readAuditStream(strings.NewReader(in), 1024, nil)
	if !errors.Is(err, bufio.ErrTooLong) || !strings.Contains(err.Error(), "line 2 of the audit stream is longer than 1024 bytes") {
		t.Fatalf("a 4 KiB line under a 1 KiB bound: %v", err)
	}
}
