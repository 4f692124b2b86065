package events_test

import (
	"testing"
	"time"

	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/fsm"
)

// benchCommands are the commands the engine benchmarks send (configure
// with one env var, restart, a provision report) and a create with a full
// spec, as EncodeCommand writes them.
func benchCommands(tb testing.TB) []struct {
	name string
	data []byte
} {
	tb.Helper()
	exit := 137
	var out []struct {
		name string
		data []byte
	}
	for _, c := range []struct {
		name string
		cmd  fsm.Command
	}{
		{"configure", fsm.Command{ID: "01JF3Z8Q4W5N6M7K8J9H0G1F2E", Type: fsm.Configure, Workspace: "bench-417",
			Spec: &fsm.Spec{Env: map[string]string{"N": "123456"}}}},
		{"restart", fsm.Command{ID: "01JF3Z8Q4W5N6M7K8J9H0G1F2E", Type: fsm.Restart, Workspace: "bench-417", Actor: "alice"}},
		{"provision_succeeded", fsm.Command{ID: "sys-provision-bench-417-g12", Type: fsm.ProvisionSucceeded,
			Workspace: "bench-417", Generation: 12, ContainerID: "3f2a9c0d1e7b"}},
		{"container_exited", fsm.Command{ID: "sys-exit-bench-417-g12", Type: fsm.ContainerExited,
			Workspace: "bench-417", Generation: 12, ExitCode: &exit, Reason: "exited"}},
		{"create_full", fsm.Command{ID: "01JF3Z8Q4W5N6M7K8J9H0G1F2E", Type: fsm.Create, Workspace: "bench-417", Actor: "alice",
			Spec: &fsm.Spec{Image: "registry.example.com/team/dev:2026.01", CPUs: 1.5, MemoryBytes: 2 << 30, Profile: "restricted",
				Env:    map[string]string{"HOME": "/home/dev", "LANG": "C.UTF-8", "EDITOR": "vim", "TOKEN": "secret://dev-token"},
				Labels: map[string]string{"team": "platform", "cost-center": "42"}}}},
	} {
		b, err := events.EncodeCommand(c.cmd)
		if err != nil {
			tb.Fatalf("%s: %v", c.name, err)
		}
		out = append(out, struct {
			name string
			data []byte
		}{c.name, b})
	}
	return out
}

// BenchmarkDecodeCommand is the engine's per-command cost of reading a
// command off the intake stream.
//
//	go test -run '^$' -bench 'DecodeCommand' -benchmem ./events/
func BenchmarkDecodeCommand(b *testing.B) {
	for _, c := range benchCommands(b) {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(int64(len(c.data)))
			for b.Loop() {
				if _, err := events.DecodeCommand(c.data, "bench-417"); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkDecodeCommandStrict is the strict decoder alone: DecodeCommand
// before its fast path, and still its cost for a command it refuses.
//
//	go test -run '^$' -bench 'DecodeCommand' -benchmem ./events/
func BenchmarkDecodeCommandStrict(b *testing.B) {
	for _, c := range benchCommands(b) {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(int64(len(c.data)))
			for b.Loop() {
				if _, err := events.DecodeCommandStrictForTest(c.data, "bench-417"); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkEncodeCommand is the client's cost of writing one.
func BenchmarkEncodeCommand(b *testing.B) {
	cmd := fsm.Command{ID: "01JF3Z8Q4W5N6M7K8J9H0G1F2E", Type: fsm.Configure, Workspace: "bench-417",
		Spec: &fsm.Spec{Env: map[string]string{"N": "123456"}}}
	for b.Loop() {
		if _, err := events.EncodeCommand(cmd); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEncodeRecords is the engine's per-command cost of writing what
// it decided: the event envelope and the outcome record of an accepted
// configure.
//
//	go test -run '^$' -bench 'EncodeRecords' -benchmem ./events/
func BenchmarkEncodeRecords(b *testing.B) {
	cmd := fsm.Command{ID: "01JF3Z8Q4W5N6M7K8J9H0G1F2E", Type: fsm.Configure, Workspace: "bench-417",
		Spec: &fsm.Spec{Env: map[string]string{"N": "123456"}}}
	prev := fsm.Workspace{ID: "bench-417", Status: fsm.Running, Generation: 3, SpecVersion: 7, Seq: 20,
		Spec: fsm.Spec{Env: map[string]string{"N": "123455"}}}
	d := fsm.Decide(prev, cmd)
	if d.Event == nil {
		b.Fatalf("configure not accepted: %+v", d)
	}
	now := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	env := events.NewEnvelope("01JF3Z8Q4W5N6M7K8J9H0G1F2F", prev, *d.Event, cmd, now)
	o := events.OutcomeRecord{CommandID: cmd.ID, Workspace: cmd.Workspace, CommandType: cmd.Type, Outcome: fsm.Accepted,
		EventSeq: env.Seq, Generation: env.State.Generation, State: env.State.Status, ReceivedAt: now, DecidedAt: now}
	b.Run("envelope", func(b *testing.B) {
		for b.Loop() {
			if _, err := (events.Codec{}).Encode(env); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("outcome", func(b *testing.B) {
		for b.Loop() {
			if _, err := events.EncodeOutcome(o); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkValidateCommand is the share of DecodeCommand that is
// fsm.Command.Validate (regular expressions on the ids), which any
// decoder pays.
func BenchmarkValidateCommand(b *testing.B) {
	cmd := fsm.Command{ID: "01JF3Z8Q4W5N6M7K8J9H0G1F2E", Type: fsm.Configure, Workspace: "bench-417",
		Spec: &fsm.Spec{Env: map[string]string{"N": "123456"}}}
	for b.Loop() {
		if err := cmd.Validate(); err != nil {
			b.Fatal(err)
		}
	}
}
