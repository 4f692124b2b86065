package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/turnstile-dev/turnstile/api"
	"github.com/turnstile-dev/turnstile/internal/testenv"
	"github.com/turnstile-dev/turnstile/read"
)

// TestConfigureRefusesAStaleBase: configure over HTTP builds the new spec
// on the read model's; when the read model stays behind the workspace's
// newest event (here its projector is held on a row lock), it sends
// nothing and says so, as that spec would undo the changes it lacks.
// --replace needs no base and goes through.
func TestConfigureRefusesAStaleBase(t *testing.T) {
	s := startInProcessServe(t, nil)
	env := map[string]string{"TURNSTILE_DATA_DIR": s.dir} // serve's api-url: the HTTP path
	if code, out, errs := runCLI(t, env, "create", "stale", "--env", "FIRST=1", "--wait"); code != 0 {
		t.Fatalf("create: exit %d\n%s%s", code, out, errs)
	}
	get := func() api.Workspace {
		t.Helper()
		code, out, errs := runCLI(t, env, "get", "stale", "-o", "json")
		var w api.Workspace
		if code != 0 || json.Unmarshal([]byte(out), &w) != nil {
			t.Fatalf("get: exit %d\n%s%s", code, out, errs)
		}
		return w
	}
	// From the read model itself: until the projector has written the
	// workspace's row, a get answers from the stream (up to date by
	// construction), and the lock below would hold nothing.
	var before api.Workspace
	testenv.Eventually(t, time.Minute, "the read model to show every event", func() bool {
		before = get()
		return before.Source == read.SourceReadModel && before.EventSeq == before.LatestEventSeq && before.Status == "running"
	})
	// Hold the projector up on the workspace's row, as a PostgreSQL outage
	// does, and let the workspace move on without it.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	db, err := pgx.Connect(ctx, s.env["TURNSTILE_DATABASE_URL"])
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close(ctx)
	tx, err := db.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	// A lock on no row holds nothing up: the projector would catch up
	// between the reads below, and configure rightly send.
	var locked uint64
	if err := tx.QueryRow(ctx, "SELECT last_event_seq FROM workspaces WHERE id = 'stale' FOR UPDATE").Scan(&locked); err != nil {
		t.Fatalf("lock the read model's row: %v", err)
	}
	if locked != before.LatestEventSeq {
		t.Fatalf("locked the row at event %d: want it at the newest event, %d", locked, before.LatestEventSeq)
	}
	if code, out, errs := runCLI(t, env, "stop", "stale", "--wait"); code != 0 {
		t.Fatalf("stop: exit %d\n%s%s", code, out, errs)
	}
	behind := get()
	if behind.EventSeq >= behind.LatestEventSeq || behind.LatestEventSeq <= before.LatestEventSeq {
		t.Fatalf("read model %+v: want it behind the stop's events", behind)
	}

	code, out, errs := runCLI(t, env, "configure", "stale", "--env", "SECOND=2")
	if code == exitOK || !strings.Contains(errs, "the read model is behind (event") || !strings.Contains(errs, "--replace") {
		t.Fatalf("configure on a stale read model: exit %d, stdout %q, stderr %q; want a refusal naming --replace", code, out, errs)
	}
	if after := get(); after.LatestEventSeq != behind.LatestEventSeq {
		t.Fatalf("events %d after the refusal, %d before: configure sent a command", after.LatestEventSeq, behind.LatestEventSeq)
	}
	if code, out, errs := runCLI(t, env, "configure", "stale", "--replace", "--env", "SECOND=2"); code != 0 {
		t.Fatalf("configure --replace: exit %d\n%s%s", code, out, errs)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, time.Minute, "the read model to catch up", func() bool {
		w := get()
		return w.EventSeq == w.LatestEventSeq && w.Spec.Env["SECOND"] == "2" && w.Spec.Env["FIRST"] == ""
	})
}
