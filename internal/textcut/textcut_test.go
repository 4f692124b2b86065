package textcut_test

import (
	"testing"

	"github.com/turnstile-dev/turnstile/internal/textcut"
)

func TestPrefix(t *testing.T) {
	for _, c := range []struct {
		s    string
		n    int
		want string
	}{
		{"short", 10, "short"},
		{"exact", 5, "exact"},
		{"abcdef", 3, "abc"},
		{"aé", 2, "a"},                  // é is 2 bytes: not split
		{"a€b", 3, "a"},                 // € is 3 bytes
		{"a€b", 4, "a€"},                // whole
		{"\xff\xff\xff", 2, "\xff\xff"}, // not UTF-8: cut anywhere
		{"é", 0, ""},
	} {
		if got := textcut.Prefix(c.s, c.n); got != c.want {
			t.Errorf("Prefix(%q, %d) = %q, want %q", c.s, c.n, got, c.want)
		}
	}
}
