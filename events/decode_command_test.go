package events_test

import (
	"errors"
	"reflect"
	"testing"

	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/fsm"
)

// fastSeeds are inputs at the edges of what the fast path reads itself:
// escapes, nulls, numbers, UTF-8, whitespace, keys that only fold to a
// field (encoding/json folds "ıd" and "K" but strings.EqualFold may not).
var fastSeeds = []string{
	`{"id":"c1","type":"create","workspace":"ws-1","spec":{"env":{"A":null,"B":"\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00\ud800"}}}`,
	`{"id":"c1","type":"create","workspace":"ws-1","spec":{"env":{"A":"é","B":"\u2028<>&"}}}`,
	"{\"id\":\"c1\",\"type\":\"create\",\"workspace\":\"ws-1\",\"spec\":{\"image\":\"\xed\xa0\x80\"}}",
	`{"id":"c1","type":"create","workspace":"ws-1","spec":{"env":{"A":"1","\u0041":"2"}}}`,
	`{"id":"c1","type":"create","workspace":"ws-1","spec":{"env":{}, "labels":{}}}`,
	`{"id":"c1","type":"create","workspace":"ws-1","spec":{"env":null,"labels":null,"image":null,"cpus":null,"memory_bytes":null,"profile":null}}`,
	`{"id":"c1","type":"create","workspace":"ws-1","spec":{"cpus":1E-7,"memory_bytes":-0}}`,
	`{"id":"c1","type":"create","workspace":"ws-1","spec":{"cpus":0.5e1,"memory_bytes":67108864.0}}`,
	`{"id":"c1","type":"create","workspace":"ws-1","spec":{"cpus":01}}`,
	`{"id":"c1","type":"create","workspace":"ws-1","spec":{"cpus":1.}}`,
	`{"id":"c1","type":"create","workspace":"ws-1","spec":{"cpus":"1"}}`,
	`{"id":"c1","type":"create","workspace":"ws-1","actor":null,"reason":null,"generation":null,"exit_code":null,"container_id":null,"spec":null}`,
	`{"id":"c1","type":"container_exited","workspace":"ws-1","generation":1,"exit_code":-0}`,
	`{"id":"c1","type":"container_exited","workspace":"ws-1","generation":1,"exit_code":9223372036854775808}`,
	`{"id":"c1","type":"container_exited","workspace":"ws-1","generation":-0,"exit_code":1}`,
	`{"id":"c1","type":"container_exited","workspace":"ws-1","generation":1e2,"exit_code":1}`,
	`{"id":"c1","type":"container_exited","workspace":"ws-1","generation":18446744073709551616}`,
	`{"id":"c1","type":"provision_succeeded","workspace":"ws-1","generation":1,"container_id":"abc.1"}`,
	`{"typ\u0065":"create","\u0069d":"c1","workspace":"ws-1"}`,
	`{"ıd":"c1","type":"create","workspace":"ws-1"}`,
	`{"İd":"c1","type":"create","workspace":"ws-1"}`,
	"{\"id\":\"c1\",\"type\":\"create\",\"workspace\":\"ws-1\",\"spec\":{\"\u212aind\":1}}",
	` {"id" : "c1" , "type":"create",` + "\n\t\r" + `"workspace":"ws-1" } ` + "\n",
	"\ufeff" + `{"id":"c1","type":"create","workspace":"ws-1"}`,
	`{"id":"c1","type":"create","workspace":"ws-1",}`,
	`{"id":"c1","type":"create","workspace":"ws-1"}}`,
	`{"id":"c1","type":"create","workspace":"ws-1","spec":{}}`,
	`{"id":"c1","type":"create","workspace":"ws-1","spec":[]}`,
	`{"id":"c1","type":"create","workspace":"ws-1","spec":{"env":{"A":1}}}`,
	`{"id":"c1","type":"create","workspace":"ws-1","spec":{"env":{"A":"\u00"}}}`,
	`{"id":"c1","type":"create","workspace":"ws-1","spec":{"env":{"A":"\x"}}}`,
	"{\"id\":\"c1\",\"type\":\"create\",\"workspace\":\"ws-1\",\"actor\":\"a\tb\"}",
	`{"id":"c1","type":"create","workspace":"ws-1","actor":true}`,
	`{"id":"c1","type":"create","workspace":"ws-1","actor":nul}`,
	`{"id":"c1","type":"create","workspace":"ws-1"`,
	`{"id":"c1","type":"create","workspace":"ws-1",`,
	`{"id":"c1","type":"create","workspace":"ws-1","actor":"`,
	`{`, `{}`, ` `, `{"id"}`, `{"id":}`,
}

// FuzzDecodeCommandFast holds DecodeCommand's fast path to the strict
// decoder, which defines what DecodeCommand accepts: whatever the fast
// path takes, the strict decoder accepts as the same command (down to nil
// and empty maps); whatever the strict decoder accepts, the fast path
// takes too (or the speed-up is lost for it); and DecodeCommand gives the
// strict decoder's result, refusal messages included.
//
//	go test -run '^$' -fuzz FuzzDecodeCommandFast -fuzztime 5m ./events/
func FuzzDecodeCommandFast(f *testing.F) {
	for _, s := range append(append([]string{}, commandSeeds...), fastSeeds...) {
		f.Add([]byte(s), "")
		f.Add([]byte(s), "ws-1")
	}
	for _, c := range benchCommands(f) {
		f.Add(c.data, "bench-417")
	}
	f.Fuzz(func(t *testing.T, b []byte, subject string) {
		want, wantErr := events.DecodeCommandStrictForTest(b, subject)
		got, ok := events.DecodeCommandFastForTest(b, subject)
		switch {
		case ok && wantErr != nil:
			t.Fatalf("fast path took %q, which the strict decoder refuses: %v", b, wantErr)
		case ok && !reflect.DeepEqual(got, want):
			t.Fatalf("fast path read %q as\n%#v\nthe strict decoder as\n%#v", b, got, want)
		case !ok && wantErr == nil:
			t.Fatalf("fast path left %q to the strict decoder, which accepts it", b)
		}
		if ok {
			// decodeCommandFast skips encoding commands up to this size:
			// their encoding is at most six times as long, plus 64.
			enc, err := events.EncodeCommand(got)
			if err != nil || len(enc) > 6*len(b)+64 {
				t.Fatalf("%d bytes encode to %d (%v): past the bound the fast path assumes", len(b), len(enc), err)
			}
		}
		c, err := events.DecodeCommand(b, subject)
		if !reflect.DeepEqual(c, want) && wantErr == nil {
			t.Fatalf("DecodeCommand read %q as %#v, want %#v", b, c, want)
		}
		if (err == nil) != (wantErr == nil) || (err != nil && err.Error() != wantErr.Error()) {
			t.Fatalf("DecodeCommand(%q): %v, the strict decoder: %v", b, err, wantErr)
		}
		var rej, wantRej *fsm.Rejection
		if err != nil && (!errors.As(err, &rej) || !errors.As(wantErr, &wantRej) || !reflect.DeepEqual(rej, wantRej)) {
			t.Fatalf("DecodeCommand(%q): rejection %#v, the strict decoder: %#v", b, rej, wantRej)
		}
	})
}
