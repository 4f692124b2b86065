package api_test

import (
	"net/http"
	"testing"

	"github.com/turnstile-dev/turnstile/api"
)

// A wait whose timeout has already passed (timeout=0) answers from the
// state the handler read first: 408 with that state, or 200 when it is
// the one asked for. It answered 408 with state none and generation 0
// (the waiter's first look failed on the expired deadline and its zero
// head was answered), even when the state was already reached.
func TestWaitTimeoutZero(t *testing.T) {
	e := newEnv(t, envOptions{noReadModel: true})
	e.create(t, "slow") // provisioning, generation 1, until a report

	t.Run("NotReachedKeepsState", func(t *testing.T) {
		r := e.do(t, "GET", "/v1/workspaces/slow/wait?state=running&timeout=0", "")
		e.wantStatus(t, r, http.StatusRequestTimeout)
		var w api.WaitResult
		r.decode(t, &w)
		if w.Reached || w.Code != api.CodeTimeout || w.State != "provisioning" || w.Generation != 1 || w.EventSeq != 1 || w.Want != "running" {
			t.Fatalf("408 body %s: want state provisioning at generation 1, event 1", r.body)
		}
	})

	t.Run("AlreadyReached", func(t *testing.T) {
		r := e.do(t, "GET", "/v1/workspaces/slow/wait?state=provisioning&generation=1&timeout=0", "")
		e.wantStatus(t, r, http.StatusOK)
		var w api.WaitResult
		r.decode(t, &w)
		if !w.Reached || w.State != "provisioning" || w.Generation != 1 {
			t.Fatalf("body %s: want reached provisioning at generation 1", r.body)
		}
	})
}
