package projector_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// TestRebuildBesideAReadersTransaction: a reader (psql with database-url,
// SELECT only) that keeps a transaction open on the read model holds an
// ACCESS SHARE lock on what it read, which the rebuild's swap must wait
// for. idle_in_transaction_session_timeout (5 minutes on the reader's
// role) is the reader's to lift, and it does not apply to a reader that
// keeps a query running. The swap gives up after its lock_timeout (30 s):
// the rebuild then fails naming the session that holds the read model
// (found in review: it said only "canceling statement due to lock
// timeout"), leaves the live read model as it was, and succeeds once the
// reader is done. Whose session to end is the operator's call.
func TestRebuildBesideAReadersTransaction(t *testing.T) {
	e := newEnv(t)
	g := newGenerator(e.names, 3, 5)
	g.publish(t, e.js, 20)
	stop := run(t, e.projector(t, nil))
	e.waitCaughtUp(t, 30*time.Second)
	stop()

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	reader, err := pgx.Connect(ctx, e.url)
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close(context.Background())
	var pid int32
	if err := reader.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&pid); err != nil {
		t.Fatal(err)
	}
	var before int
	if _, err := reader.Exec(ctx, `SET idle_in_transaction_session_timeout = 0; BEGIN READ ONLY`); err != nil {
		t.Fatal(err)
	}
	if err := reader.QueryRow(ctx, `SELECT count(*) FROM workspaces`).Scan(&before); err != nil {
		t.Fatal(err)
	}
	_, err = e.projector(t, nil).Rebuild(ctx, nil)
	if err == nil {
		t.Fatal("rebuild beside a reader's open transaction succeeded: the reader's lock was not held")
	}
	if want := fmt.Sprintf("pid %d (user ", pid); !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "the live read model is unchanged") {
		t.Errorf("rebuild's error does not name the reader's session (%q) or say the read model is unchanged: %v", want, err)
	}
	if _, err := reader.Exec(ctx, `COMMIT`); err != nil {
		t.Fatal(err)
	}
	var after int
	if err := reader.QueryRow(ctx, `SELECT count(*) FROM workspaces`).Scan(&after); err != nil || after != before {
		t.Errorf("workspaces after the failed rebuild: %d (%v), want %d", after, err, before)
	}
	if _, err := e.projector(t, nil).Rebuild(ctx, nil); err != nil {
		t.Fatalf("rebuild once the reader committed: %v", err)
	}
}
