package webhook_test

import (
	"errors"
	"testing"
	"time"

	"github.com/turnstile-dev/turnstile/webhook"
)

func TestSignatureVerify(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	body := []byte(`{"id":"wh-0123456789abcdef-7"}`)
	sig := webhook.Sign("whsec_a", now, body)
	for _, tc := range []struct {
		name   string
		secret string
		header string
		body   []byte
		at     time.Time
		ok     bool
	}{
		{"Valid", "whsec_a", sig, body, now, true},
		{"ValidWithinTolerance", "whsec_a", sig, body, now.Add(4 * time.Minute), true},
		{"ExtraUnknownScheme", "whsec_a", sig + ",v0=zz", body, now, true},
		{"WrongSecret", "whsec_b", sig, body, now, false},
		{"TamperedBody", "whsec_a", sig, []byte(`{"id":"wh-0123456789abcdef-8"}`), now, false},
		{"Stale", "whsec_a", sig, body, now.Add(6 * time.Minute), false},
		{"Future", "whsec_a", sig, body, now.Add(-6 * time.Minute), false},
		{"Empty", "whsec_a", "", body, now, false},
		{"NoTimestamp", "whsec_a", "v1=00", body, now, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := webhook.Verify(tc.secret, tc.header, tc.body, 5*time.Minute, tc.at)
			if (err == nil) != tc.ok || (err != nil && !errors.Is(err, webhook.ErrBadSignature)) {
				t.Fatalf("Verify: %v, want ok=%v", err, tc.ok)
			}
		})
	}
}
