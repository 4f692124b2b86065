package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Headers of a delivery.
const (
	HeaderSignature = "Turnstile-Signature"  // t=<unix>,v1=<hex HMAC-SHA256(secret, t + "." + body)>
	HeaderDelivery  = "Turnstile-Delivery"   // <webhook id>-<stream seq>: the same on every attempt
	HeaderWebhook   = "Turnstile-Webhook"    // the webhook's id
	HeaderEventSeq  = "Turnstile-Event-Seq"  // the event's stream sequence
	HeaderEventType = "Turnstile-Event-Type" // e.g. workspace.provisioned
	HeaderAttempt   = "Turnstile-Attempt"    // 1 on the first try of this serve process
)

// Sign returns the Turnstile-Signature value of body sent at t.
func Sign(secret string, t time.Time, body []byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	return "t=" + ts + ",v1=" + mac(secret, ts, body)
}

func mac(secret, ts string, body []byte) string {
	h := hmac.New(sha256.New, []byte(secret))
	h.Write([]byte(ts))
	h.Write([]byte("."))
	h.Write(body)
	return hex.EncodeToString(h.Sum(nil))
}

// ErrBadSignature is a delivery whose signature does not verify.
var ErrBadSignature = errors.New("webhook signature does not verify")

// Verify checks a delivery's Turnstile-Signature header against body, as
// a receiver should: the HMAC of any v1 entry matches (compared in
// constant time), and its timestamp is within tolerance of now, against
// replays. A tolerance of 0 skips the time check.
func Verify(secret, header string, body []byte, tolerance time.Duration, now time.Time) error {
	var ts string
	var sigs []string
	for part := range strings.SplitSeq(header, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			continue
		}
		switch k {
		case "t":
			ts = v
		case "v1":
			sigs = append(sigs, v)
		}
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || len(sigs) == 0 {
		return fmt.Errorf("%w: want t=<unix>,v1=<hex>", ErrBadSignature)
	}
	if tolerance > 0 {
		if d := now.Sub(time.Unix(sec, 0)); d > tolerance || d < -tolerance {
			return fmt.Errorf("%w: timestamp %d is %v away from now", ErrBadSignature, sec, d.Round(time.Second))
		}
	}
	want := []byte(mac(secret, ts, body))
	for _, s := range sigs {
		if hmac.Equal([]byte(s), want) {
			return nil
		}
	}
	return ErrBadSignature
}
