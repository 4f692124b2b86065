package fsm_test

import (
	"testing"

	"github.com/turnstile-dev/turnstile/fsm"
)

// BenchmarkDecide is the engine's per-command cost of the lifecycle.
//
//	go test -run '^$' -bench Decide ./fsm/
func BenchmarkDecide(b *testing.B) {
	w := fsm.Workspace{ID: "b", Status: fsm.Provisioning, Generation: 3, SpecVersion: 1, AttemptSpecVersion: 1}
	accepted := fsm.Command{ID: "c", Type: fsm.Configure, Workspace: "b", Spec: &fsm.Spec{Image: "x"}}
	rejected := fsm.Command{ID: "c", Type: fsm.Restart, Workspace: "b"}
	b.Run("accepted", func(b *testing.B) {
		for b.Loop() {
			if fsm.Decide(w, accepted).Outcome != fsm.Accepted {
				b.Fatal("not accepted")
			}
		}
	})
	b.Run("rejected", func(b *testing.B) {
		for b.Loop() {
			if fsm.Decide(w, rejected).Outcome != fsm.Rejected {
				b.Fatal("not rejected")
			}
		}
	})
}
