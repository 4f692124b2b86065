package projector

import (
	"strings"
	"testing"
	"time"

	"github.com/turnstile-dev/turnstile/events"
)

// FuzzDecodeNeverStalls: whatever a message on an event or outcome subject
// holds, decode neither panics nor fails: it yields an event, an outcome
// or a dead letter, and every text it hands the writers is one PostgreSQL
// takes (no NUL, no "\u0000" escape in a JSON document). Issue 12 item 5:
// anything else stalls the projector for every workspace.
func FuzzDecodeNeverStalls(f *testing.F) {
	for _, s := range wireSeeds(f) {
		f.Add([]byte(s.doc), s.event)
	}
	for _, b := range []string{`{"garbage":true}`, `{"id":`, "\xff\x00", `{"schema_version":2}`, `null`, `[]`, `""`,
		`{"command_id":"cx","outcome":"rejected","state":"\u0000","workspace":"\u0000"}`} {
		f.Add([]byte(b), true)
		f.Add([]byte(b), false)
	}
	d := decoder{names: events.NewNames("")}
	f.Fuzz(func(t *testing.T, b []byte, event bool) {
		subject := d.names.Outcome("cx")
		if event {
			subject = d.names.Event("ws-1")
		}
		for _, slow := range []bool{false, true} {
			d.slow = slow
			m := d.decode(7, subject, b, time.Unix(0, 0))
			kinds := 0
			for _, set := range []bool{m.event != nil, m.outcome != nil, m.dead != nil} {
				if set {
					kinds++
				}
			}
			if kinds != 1 {
				t.Fatalf("decode gave %d kinds of result for %q", kinds, b)
			}
			var texts, docs []string
			switch {
			case m.event != nil:
				r, w := m.event.row, m.event.state
				texts = append(texts, r.EventID, r.Workspace, r.Type, r.ToStatus, r.CommandID, deref(r.Reason), deref(r.Actor),
					w.ID, w.Status, w.Image, deref(w.ContainerID), deref(w.LastError))
				spec, err := specJSON(&w)
				if err != nil {
					t.Fatal(err)
				}
				docs = append(docs, r.Payload, spec)
			case m.outcome != nil:
				r := m.outcome
				texts = append(texts, r.CommandID, r.Workspace, r.Type, deref(r.Actor), r.Outcome, deref(r.RejectionCode),
					deref(r.RejectionMsg), deref(r.Reason), r.State)
			default:
				dl := deadLetterOf(m.dead)
				texts = append(texts, dl.Subject, dl.Reason, dl.Error)
				if len(dl.Data) > maxDeadLetterData || dl.Size != int64(len(b)) {
					t.Fatalf("dead letter keeps %d of %d bytes", len(dl.Data), dl.Size)
				}
			}
			for _, s := range texts {
				if strings.IndexByte(s, 0) >= 0 {
					t.Fatalf("text with NUL from %q: %q", b, s)
				}
			}
			for _, s := range docs {
				if storableJSON(s) != s {
					t.Fatalf("JSON with a NUL escape from %q: %s", b, s)
				}
			}
		}
	})
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
