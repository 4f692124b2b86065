package events_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/turnstile-dev/turnstile/events"
)

// TestActorProof: a proof verifies under its key, for its bytes, within
// the window either side of the stored time, and nothing else does.
func TestActorProof(t *testing.T) {
	key := []byte(strings.Repeat("k", events.ActorKeySize))
	data := []byte(`{"id":"a","type":"stop","workspace":"w","actor":"api:ci"}`)
	stored := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	const window = 2 * time.Minute
	proof := func(at time.Time) string { return events.ActorProof(key, at, data) }
	for _, tc := range []struct {
		name   string
		key    []byte
		proof  string
		data   []byte
		wantOK bool
	}{
		{"Now", key, proof(stored), data, true},
		{"WindowBefore", key, proof(stored.Add(-window)), data, true},
		{"WindowAfter", key, proof(stored.Add(window)), data, true},
		{"PastWindowBefore", key, proof(stored.Add(-window - time.Millisecond)), data, false},
		{"PastWindowAfter", key, proof(stored.Add(window + time.Millisecond)), data, false},
		{"OtherBytes", key, proof(stored), append([]byte(" "), data...), false},
		{"NoKey", nil, proof(stored), data, false},
		{"OtherKey", []byte(strings.Repeat("x", events.ActorKeySize)), proof(stored), data, false},
		{"Empty", key, "", data, false},
		{"NoSignature", key, "1764936000000", data, false},
		{"TimeMoved", key, "1" + proof(stored), data, false},
		{"HugeTime", key, "99999999999999999999." + strings.SplitN(proof(stored), ".", 2)[1], data, false},
		{"FarPast", key, "-9223372036854775808." + strings.SplitN(proof(stored), ".", 2)[1], data, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := events.CheckActorProof(tc.key, tc.proof, tc.data, stored, window)
			if tc.wantOK != (err == nil) || (err != nil && !errors.Is(err, events.ErrActorProof)) {
				t.Fatalf("CheckActorProof(%q): %v", tc.proof, err)
			}
		})
	}
}
