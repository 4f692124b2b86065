package reliability_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/turnstile-dev/turnstile/api"
	"github.com/turnstile-dev/turnstile/client"
	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/internal/retry"
)

// cmdRecorder sends commands, each under one id that it resends after a
// transport error until an outcome arrives, and keeps what it sent for
// checkStream. Safe for concurrent use.
type cmdRecorder struct {
	cl  *client.Client
	log *sentLog
}

// sentLog is what one or more recorders sent.
type sentLog struct {
	mu   sync.Mutex
	sent map[string]sent
}

func newCmdRecorder(cl *client.Client) *cmdRecorder {
	return &cmdRecorder{cl: cl, log: &sentLog{sent: map[string]sent{}}}
}

// via is a recorder that sends through cl into r's log.
func (r *cmdRecorder) via(cl *client.Client) *cmdRecorder { return &cmdRecorder{cl: cl, log: r.log} }

func (r *cmdRecorder) record(s sent) {
	r.log.mu.Lock()
	r.log.sent[s.cmd.ID] = s
	r.log.mu.Unlock()
}

// send sends cmd until it has an outcome or ctx ends.
func (r *cmdRecorder) send(ctx context.Context, cmd fsm.Command) (events.OutcomeRecord, error) {
	if cmd.ID == "" {
		cmd.ID = client.NewCommandID()
	}
	r.record(sent{cmd: cmd})
	for {
		actx, cancel := context.WithTimeout(ctx, 10*time.Second)
		o, err := r.cl.Send(actx, cmd)
		cancel()
		if err == nil {
			r.record(sent{cmd: cmd, outcome: o})
			return o, nil
		}
		var rej *fsm.Rejection
		if errors.As(err, &rej) || ctx.Err() != nil {
			return o, fmt.Errorf("%s %s: %w", cmd.Type, cmd.Workspace, err)
		}
		if err := retry.Sleep(ctx, 100*time.Millisecond); err != nil { // back off before the resend
			return o, fmt.Errorf("%s %s: %w", cmd.Type, cmd.Workspace, err)
		}
	}
}

// mustSend sends cmd and fails the test unless it gets outcome want.
func (r *cmdRecorder) mustSend(t *testing.T, cmd fsm.Command, want fsm.Outcome) events.OutcomeRecord {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	o, err := r.send(ctx, cmd)
	if err != nil {
		t.Fatal(err)
	}
	if o.Outcome != want {
		t.Fatalf("%s %s: outcome %s, want %s (%+v)", cmd.Type, cmd.Workspace, o.Outcome, want, o.Rejection)
	}
	return o
}

// commands returns what was sent, through r and every recorder via r.
func (r *cmdRecorder) commands() map[string]sent {
	r.log.mu.Lock()
	defer r.log.mu.Unlock()
	return maps.Clone(r.log.sent)
}

// settleWorkspace waits until workspace id is in no in-flight state and returns
// its state.
func settleWorkspace(t *testing.T, store *events.Store, id string, timeout time.Duration) fsm.Workspace {
	t.Helper()
	return waitWorkspace(t, store, id, timeout, "to settle", func(st fsm.Workspace) bool { return !st.Status.InFlight() })
}

// waitWorkspaceStatus waits until workspace id is in status want.
func waitWorkspaceStatus(t *testing.T, store *events.Store, id string, want fsm.Status, timeout time.Duration) fsm.Workspace {
	t.Helper()
	return waitWorkspace(t, store, id, timeout, "to be "+want.String(), func(st fsm.Workspace) bool { return st.Status == want })
}

func waitWorkspace(t *testing.T, store *events.Store, id string, timeout time.Duration, what string, cond func(fsm.Workspace) bool) fsm.Workspace {
	t.Helper()
	var st fsm.Workspace
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		h, err := store.Load(ctx, id)
		cancel()
		if err == nil {
			st = h.State
			if cond(st) {
				return st
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("workspace %s did not come %s within %v: %s at generation %d, last error %q (%v)",
				id, what, timeout, st.Status, st.Generation, st.LastError, err)
		}
		time.Sleep(100 * time.Millisecond) // poll interval, not synchronization
	}
}

// workspaceEvents returns workspace id's events.
func workspaceEvents(t *testing.T, store *events.Store, id string) []events.Envelope {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out []events.Envelope
	if err := store.History(ctx, id, func(e events.Envelope) error { out = append(out, e); return nil }); err != nil {
		t.Fatalf("history %s: %v", id, err)
	}
	return out
}

// lastFailure returns the newest event of id that made it failed, checking
// that it is the event that produced state st and carries st's reason.
func lastFailure(t *testing.T, store *events.Store, st fsm.Workspace) events.Envelope {
	t.Helper()
	h := workspaceEvents(t, store, st.ID)
	for i := len(h) - 1; i >= 0; i-- {
		e := h[i]
		if e.State.Status != fsm.Failed || (i > 0 && h[i-1].State.Status == fsm.Failed) {
			continue
		}
		if e.Seq != st.Seq || e.Payload.Reason == "" || e.Payload.Reason != st.LastError {
			t.Errorf("workspace %s: failure event %d (%s, reason %q) is not the state's (seq %d, last error %q)",
				st.ID, e.Seq, e.Type, e.Payload.Reason, st.Seq, st.LastError)
		}
		return e
	}
	t.Fatalf("workspace %s: no event made it failed in %d events", st.ID, len(h))
	return events.Envelope{}
}

// readModel polls GET /v1/workspaces/{id} until the read model reflects
// event seq or later, and returns it.
func (s *serve) readModel(t *testing.T, id string, seq uint64) api.Workspace {
	t.Helper()
	hc := &http.Client{Timeout: 5 * time.Second}
	var w api.Workspace
	var last string
	deadline := time.Now().Add(time.Minute)
	for {
		resp, err := s.apiGet(hc, "/v1/workspaces/"+id)
		if err == nil {
			w = api.Workspace{}
			err = json.NewDecoder(resp.Body).Decode(&w)
			_ = resp.Body.Close()
			if err == nil && resp.StatusCode == http.StatusOK && w.Source == api.SourceReadModel && w.EventSeq >= seq {
				return w
			}
			last = fmt.Sprintf("HTTP %d, %+v, %v", resp.StatusCode, w, err)
		} else {
			last = err.Error()
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET /v1/workspaces/%s did not reflect event %d within a minute: %s", id, seq, last)
		}
		time.Sleep(100 * time.Millisecond) // poll interval, not synchronization
	}
}

// checkFailed checks that st is failed with a reason containing every one
// of want, in the stream (the failure event) and in the read model
// (GET /v1/workspaces/{id}), and returns the failure event.
func checkFailed(t *testing.T, s *serve, store *events.Store, st fsm.Workspace, want ...string) events.Envelope {
	t.Helper()
	if st.Status != fsm.Failed || st.LastError == "" {
		t.Fatalf("workspace %s is %s with last error %q, want failed with a reason", st.ID, st.Status, st.LastError)
	}
	e := lastFailure(t, store, st)
	t.Logf("%s failed at generation %d by %s: %s", st.ID, st.Generation, e.Type, st.LastError)
	for _, w := range want {
		if !strings.Contains(st.LastError, w) {
			t.Errorf("workspace %s failed with %q, which does not mention %q", st.ID, st.LastError, w)
		}
	}
	rm := s.readModel(t, st.ID, st.Seq)
	if rm.EventSeq == st.Seq && (rm.Status != st.Status.String() || rm.LastError != st.LastError || rm.Generation != st.Generation) {
		t.Errorf("read model of %s says %s at %d (%q), the stream %s at %d (%q)",
			st.ID, rm.Status, rm.Generation, rm.LastError, st.Status, st.Generation, st.LastError)
	}
	return e
}

// conflicts returns every event reason and outcome in the stream that
// mentions a name conflict (Docker's, or the provisioner's words for one).
func conflicts(t *testing.T, store *events.Store) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var out []string
	mentions := func(s string) bool {
		s = strings.ToLower(s)
		return strings.Contains(s, "conflict") || strings.Contains(s, "is taken by") || strings.Contains(s, "already in use") ||
			strings.Contains(s, "changing hands")
	}
	err := store.Replay(ctx, 1, 0, func(r events.Record) error {
		switch {
		case r.Event != nil && mentions(r.Event.Payload.Reason):
			out = append(out, fmt.Sprintf("event %s of %s: %s", r.Event.Type, r.Event.Workspace, r.Event.Payload.Reason))
		case r.Outcome != nil:
			o := r.Outcome
			text := o.Reason
			if o.Rejection != nil {
				text += " " + o.Rejection.Message
			}
			if mentions(text) {
				out = append(out, fmt.Sprintf("outcome of %s %s: %s", o.CommandType, o.Workspace, text))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("replay: %v", err)
	}
	slices.Sort(out)
	return out
}
