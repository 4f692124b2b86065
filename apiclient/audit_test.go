package apiclient_test

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/turnstile-dev/turnstile/api"
	"github.com/turnstile-dev/turnstile/apiclient"
	"github.com/turnstile-dev/turnstile/fsm"
)

// TestAuditAllProgress: AuditAllProgress hands on serve's progress, from 0
// to the stream's last sequence and never back, and returns the report
// the plain AuditAll returns.
func TestAuditAllProgress(t *testing.T) {
	// Every progress call of the replay makes a line.
	st := newStack(t, func(c *api.Config) { c.ProgressInterval = time.Nanosecond })
	ctx := ctxT(t)
	for _, id := range []string{"p-a", "p-b", "p-c"} {
		if _, err := st.c.Send(ctx, fsm.Command{Type: fsm.Create, Workspace: id}); err != nil {
			t.Fatal(err)
		}
	}
	type call struct{ seq, last uint64 }
	var calls []call
	rep, err := st.c.AuditAllProgress(ctx, func(seq, last uint64) { calls = append(calls, call{seq, last}) })
	if err != nil || !rep.OK || rep.Workspaces != 3 || rep.Events != 3 || rep.Through == 0 {
		t.Fatalf("audit: %+v %v", rep, err)
	}
	if len(calls) < 2 || calls[0].seq != 0 || calls[len(calls)-1].seq != rep.Through {
		t.Fatalf("progress %v: want from 0 through %d", calls, rep.Through)
	}
	for i, c := range calls {
		if c.last != rep.Through || (i > 0 && c.seq < calls[i-1].seq) {
			t.Fatalf("progress %v: call %d goes back or names another last than %d", calls, i, rep.Through)
		}
	}
	plain, err := st.c.AuditAll(ctx)
	if err != nil || !reflect.DeepEqual(plain, rep) {
		t.Fatalf("the plain answer %+v %v differs from the streamed one %+v", plain, err, rep)
	}
	if again, err := st.c.AuditAllProgress(ctx, nil); err != nil || !reflect.DeepEqual(again, rep) {
		t.Fatalf("without a progress function: %+v %v", again, err)
	}
}

// TestAuditAllProgressError: an error serve reports in the stream's last
// line is the *Error the plain answer gives, status and all.
func TestAuditAllProgressError(t *testing.T) {
	st := newStack(t, func(c *api.Config) { c.MaxWait = time.Nanosecond })
	ctx := ctxT(t)
	_, plain := st.c.AuditAll(ctx)
	_, err := st.c.AuditAllProgress(ctx, func(uint64, uint64) {})
	var e, pe *apiclient.Error
	if !errors.As(err, &e) || !errors.As(plain, &pe) || e.Status != http.StatusServiceUnavailable ||
		e.Body.Code != api.CodeUnavailable || err.Error() != plain.Error() || !strings.Contains(err.Error(), "did not finish in 1ns") {
		t.Fatalf("streamed: %v; plain: %v; want the same 503 unavailable *Error", err, plain)
	}
}

// TestAuditAllProgressHostile: answers a serve does not give (a stream
// cut short or cut off, lines that do not decode, an error answer) end in
// a clear error, never a report; a plain JSON answer (a serve from before
// the stream) is the report without progress.
func TestAuditAllProgressHostile(t *testing.T) {
	const progress = `{"progress":{"seq":0,"last":9}}` + "\n" + `{"progress":{"seq":4,"last":9}}` + "\n"
	ndjson := func(body string) http.HandlerFunc {
		return func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", api.NDJSON)
			_, _ = w.Write([]byte(body))
		}
	}
	for _, tc := range []struct {
		name    string
		handler http.HandlerFunc
		calls   int    // progress calls before the end
		want    string // in the error; "" for the report
	}{
		{"EndsBeforeReport", ndjson(progress), 2, "the audit stream ended before its report, after 2 line(s)"},
		{"Empty", ndjson(""), 0, "the audit stream ended before its report, after 0 line(s)"},
		{"CutOff", func(w http.ResponseWriter, r *http.Request) {
			ndjson(progress)(w, r)
			http.NewResponseController(w).Flush()
			panic(http.ErrAbortHandler) // the connection drops mid-answer
		}, 2, "the audit stream was cut after 2 line(s)"},
		{"NotJSON", ndjson(progress + "<html>\n"), 2, "line 3 of the audit stream is not what this CLI understands"},
		{"CutMidLine", ndjson(progress + `{"report":{"ok":tr`), 2, "line 3 of the audit stream is not what this CLI understands"},
		// Lines of a newer serve this client does not know, and blank
		// lines, are passed over; the report still has to come.
		{"UnknownLines", ndjson(progress + "{}\n\n" + `{"keepalive":true}` + "\n"), 2, "the audit stream ended before its report, after 5 line(s)"},
		{"UnknownThenReport", ndjson(progress + `{"keepalive":true}` + "\n" + `{"report":{"workspaces":2,"events":5,"through_stream_seq":9,"ok":true,"violations":[]}}` + "\n"), 2, ""},
		{"ErrorAnswer", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusTooManyRequests)
			_, _ = w.Write([]byte(`{"code":"too_many_waits","message":"retry in a moment"}`))
		}, 0, "retry in a moment (429 too_many_waits)"},
		{"Report", ndjson(progress + `{"report":{"workspaces":2,"events":5,"through_stream_seq":9,"ok":true,"violations":[]}}` + "\n" + "trailing\n"), 2, ""},
		{"PlainReport", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"workspaces":2,"events":5,"through_stream_seq":9,"ok":true,"violations":[]}`))
		}, 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var accept string
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				accept = r.Header.Get("Accept")
				tc.handler(w, r)
			}))
			defer srv.Close()
			c, err := apiclient.New(srv.URL, token, nil)
			if err != nil {
				t.Fatal(err)
			}
			calls := 0
			rep, err := c.AuditAllProgress(ctxT(t), func(uint64, uint64) { calls++ })
			if accept != api.NDJSON {
				t.Fatalf("Accept %q, want %s", accept, api.NDJSON)
			}
			if calls != tc.calls {
				t.Fatalf("%d progress calls, want %d", calls, tc.calls)
			}
			if tc.want == "" {
				if err != nil || !rep.OK || rep.Workspaces != 2 || rep.Through != 9 {
					t.Fatalf("want the report: %+v %v", rep, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one saying %q", err, tc.want)
			}
			if tc.name == "ErrorAnswer" {
				var e *apiclient.Error
				if !errors.As(err, &e) || e.Status != http.StatusTooManyRequests {
					t.Fatalf("an error answer: %v, want an *Error of 429", fmt.Sprint(err))
				}
			}
		})
	}
}
