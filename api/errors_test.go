package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/nats-io/nats.go"
)

// TestWriteErrorClassifies: only a failure to reach NATS or PostgreSQL is
// 503 unavailable (a retry may help); any other unclassified error is 500
// internal, and neither shows the error's text (issue 15 item 4).
func TestWriteErrorClassifies(t *testing.T) {
	s := &Server{log: slog.New(slog.DiscardHandler)}
	for _, tc := range []struct {
		name   string
		err    error
		status int
		code   string
	}{
		{"Unclassified", errors.New("secret detail"), http.StatusInternalServerError, CodeInternal},
		{"NATSGone", fmt.Errorf("load: %w", nats.ErrNoResponders), http.StatusServiceUnavailable, CodeUnavailable},
		{"NATSTimeout", fmt.Errorf("load: %w", nats.ErrTimeout), http.StatusServiceUnavailable, CodeUnavailable},
		{"PostgresConnect", fmt.Errorf("get: %w", &pgconn.ConnectError{}), http.StatusServiceUnavailable, CodeUnavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			s.writeError(rec, httptest.NewRequest("GET", "/v1/workspaces/a", nil), tc.err)
			var body ErrorBody
			if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
				t.Fatal(err)
			}
			if rec.Code != tc.status || body.Code != tc.code {
				t.Fatalf("got %d %q, want %d %q", rec.Code, body.Code, tc.status, tc.code)
			}
			if body.Message == "" || body.Message == tc.err.Error() {
				t.Fatalf("message %q: want a fixed text, not the error's", body.Message)
			}
		})
	}
}

// A field's message names the field once: one that starts with the name
// (the fsm's "spec.cpus -1 is …") gets no second one in front; one that
// starts with a longer name, or not with the name, does.
func TestFieldErrorNamesTheFieldOnce(t *testing.T) {
	for _, tc := range []struct{ field, msg, want string }{
		{"spec.memory_bytes", "spec.memory_bytes 100 is out of range", "spec.memory_bytes 100 is out of range"},
		{"spec.env", "spec.env[A] is 5000 bytes", "spec.env[A] is 5000 bytes"},
		{"spec", "spec.cpus is wrong", "spec.cpus is wrong"},
		{"spec.env", "spec.envx is not a field", "spec.env: spec.envx is not a field"},
		{"since", "999 is past the event stream's last sequence, 60", "since: 999 is past the event stream's last sequence, 60"},
		{"id", "workspace id is empty", "id: workspace id is empty"},
	} {
		if got := badField(tc.field, tc.msg).Error(); got != tc.want {
			t.Errorf("badField(%q, %q) = %q, want %q", tc.field, tc.msg, got, tc.want)
		}
	}
}
