package bench_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/goleak"

	"github.com/turnstile-dev/turnstile/bench"
	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/internal/testenv"
)

// TestMain fails the package if any test leaves a goroutine behind.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// openRowLock gives the peer a fresh database on pg, its schema created, on
// a pool closed when the test ends. params are session settings.
func openRowLock(tb testing.TB, pg *testenv.Postgres, conns int, params map[string]string) *bench.RowLock {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg, err := pgxpool.ParseConfig(pg.NewDatabase(tb))
	if err != nil {
		tb.Fatal(err)
	}
	cfg.MaxConns = int32(conns)
	for k, v := range params {
		cfg.ConnConfig.RuntimeParams[k] = v
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(pool.Close)
	rl := bench.New(pool)
	if err := rl.CreateSchema(ctx); err != nil {
		tb.Fatal(err)
	}
	return rl
}

// TestRowLockFollowsLifecycle drives the peer through a scripted lifecycle
// and checks every outcome, the row after it and the history against
// fsm.Decide and fsm.Apply folded in memory: the peer the benchmark
// measures must be the same state machine, or the comparison means
// nothing. Issue 16 item 1.
func TestRowLockFollowsLifecycle(t *testing.T) {
	pg := testenv.StartPostgres(t)
	rl := openRowLock(t, pg, 4, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	const id = "peer-ws"
	specA := &fsm.Spec{Env: map[string]string{"A": "1"}}
	specB := &fsm.Spec{Image: "busybox", Env: map[string]string{"B": "2"}}
	exit := 3
	script := []struct {
		name string
		cmd  fsm.Command
		want fsm.Outcome
	}{
		{"report before create", fsm.Command{Type: fsm.ProvisionSucceeded, Generation: 1}, fsm.Rejected},
		{"restart before create", fsm.Command{Type: fsm.Restart}, fsm.Rejected},
		{"create", fsm.Command{Type: fsm.Create}, fsm.Accepted},
		{"create again", fsm.Command{Type: fsm.Create}, fsm.Rejected},
		{"restart while provisioning", fsm.Command{Type: fsm.Restart}, fsm.Rejected},
		{"configure while provisioning", fsm.Command{Type: fsm.Configure, Spec: specA}, fsm.Accepted},
		{"succeeded starts the follow-up", fsm.Command{Type: fsm.ProvisionSucceeded, Generation: 1, ContainerID: "c1"}, fsm.Accepted},
		{"stale succeeded of generation 1", fsm.Command{Type: fsm.ProvisionSucceeded, Generation: 1, ContainerID: "c1"}, fsm.Stale},
		{"report of a future generation", fsm.Command{Type: fsm.ProvisionSucceeded, Generation: 9}, fsm.Rejected},
		{"succeeded of generation 2", fsm.Command{Type: fsm.ProvisionSucceeded, Generation: 2, ContainerID: "c2"}, fsm.Accepted},
		{"succeeded again while running", fsm.Command{Type: fsm.ProvisionSucceeded, Generation: 2, ContainerID: "c2"}, fsm.Stale},
		{"start while running", fsm.Command{Type: fsm.Start}, fsm.Noop},
		{"configure while running", fsm.Command{Type: fsm.Configure, Spec: specB}, fsm.Accepted},
		{"same spec again", fsm.Command{Type: fsm.Configure, Spec: specB}, fsm.Noop},
		{"stale succeeded of generation 2", fsm.Command{Type: fsm.ProvisionSucceeded, Generation: 2, ContainerID: "c2"}, fsm.Stale},
		{"provision failed", fsm.Command{Type: fsm.ProvisionFailed, Generation: 3, Reason: "image pull failed"}, fsm.Accepted},
		{"restart from failed", fsm.Command{Type: fsm.Restart}, fsm.Accepted},
		{"succeeded of generation 4", fsm.Command{Type: fsm.ProvisionSucceeded, Generation: 4, ContainerID: "c4"}, fsm.Accepted},
		{"restart", fsm.Command{Type: fsm.Restart}, fsm.Accepted},
		{"succeeded without a container id", fsm.Command{Type: fsm.ProvisionSucceeded, Generation: 5}, fsm.Accepted},
		{"container exited", fsm.Command{Type: fsm.ContainerExited, Generation: 5, ExitCode: &exit}, fsm.Accepted},
		{"delete", fsm.Command{Type: fsm.Delete}, fsm.Accepted},
		{"stale succeeded while deleting", fsm.Command{Type: fsm.ProvisionSucceeded, Generation: 6}, fsm.Stale},
		{"delete succeeded", fsm.Command{Type: fsm.DeleteSucceeded, Generation: 6}, fsm.Accepted},
		{"restart when deleted", fsm.Command{Type: fsm.Restart}, fsm.Rejected},
		{"create again after delete", fsm.Command{Type: fsm.Create, Spec: specA}, fsm.Accepted},
		{"succeeded of generation 7", fsm.Command{Type: fsm.ProvisionSucceeded, Generation: 7, ContainerID: "c7"}, fsm.Accepted},
	}
	model := fsm.Workspace{ID: id}
	var wantEvents []fsm.EventType
	for i, s := range script {
		cmd := s.cmd
		cmd.Workspace, cmd.ID, cmd.Actor = id, fmt.Sprintf("cmd-%d", i), "test"
		d := fsm.Decide(model, cmd)
		if d.Outcome != s.want {
			t.Fatalf("%s: the script expects %s but fsm.Decide says %s (%+v): fix the script", s.name, s.want, d.Outcome, d)
		}
		res, err := rl.Send(ctx, cmd)
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if res.Outcome != d.Outcome {
			t.Fatalf("%s: peer says %s (%s), fsm says %s (%s)", s.name, res.Outcome, res.Reason, d.Outcome, d.Reason)
		}
		if d.Rejection != nil && (res.Rejection == nil || res.Rejection.Code != d.Rejection.Code) {
			t.Fatalf("%s: peer rejection %+v, fsm %+v", s.name, res.Rejection, d.Rejection)
		}
		if d.Outcome == fsm.Accepted {
			if res.Event == nil || res.Event.Type != d.Event.Type || res.Event.Generation != d.Event.Generation {
				t.Fatalf("%s: peer event %+v, fsm %+v", s.name, res.Event, d.Event)
			}
			model = fsm.Apply(model, *d.Event)
			wantEvents = append(wantEvents, d.Event.Type)
		}
		got, err := rl.Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		assertState(t, s.name, got, model)
		assertState(t, s.name+" (result)", res.State, model)
	}

	hist, err := rl.History(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if len(hist) != len(wantEvents) {
		t.Fatalf("history has %d rows, want %d: %+v", len(hist), len(wantEvents), hist)
	}
	for i, h := range hist {
		if h.Seq != uint64(i+1) || h.Type != wantEvents[i] {
			t.Errorf("history row %d: seq %d %s, want seq %d %s", i, h.Seq, h.Type, i+1, wantEvents[i])
		}
	}
}

// TestRowLockRefusesBadInput: a malformed command is an error naming what is
// wrong and writes nothing.
func TestRowLockRefusesBadInput(t *testing.T) {
	pg := testenv.StartPostgres(t)
	rl := openRowLock(t, pg, 2, nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, cmd := range []fsm.Command{
		{Type: fsm.Create, Workspace: "Not.A.Label"},
		{Type: fsm.ProvisionSucceeded, Workspace: "ok"},
		{Type: "explode", Workspace: "ok"},
	} {
		_, err := rl.Send(ctx, cmd)
		if fsm.RejectionCode(err) != fsm.CodeInvalid {
			t.Errorf("%+v: got %v, want an invalid rejection", cmd, err)
		}
		w, err := rl.Get(ctx, cmd.Workspace)
		if err != nil || w.Exists() {
			t.Errorf("%+v wrote %+v (%v)", cmd, w, err)
		}
	}
}

func assertState(t *testing.T, what string, got, want fsm.Workspace) {
	t.Helper()
	if got.ID != want.ID || got.Status != want.Status || got.Generation != want.Generation ||
		got.SpecVersion != want.SpecVersion || got.AttemptSpecVersion != want.AttemptSpecVersion ||
		!got.Spec.Equal(want.Spec) || got.ContainerID != want.ContainerID || got.LastError != want.LastError ||
		got.Seq != want.Seq {
		t.Fatalf("%s: peer state\n %+v\nfsm state\n %+v", what, got, want)
	}
}
