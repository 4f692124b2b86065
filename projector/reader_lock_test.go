package projector_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// TestRebuildBesideAReadersTransaction: a reader (psql with database-url,
// SELECT only) that keeps a transaction open on the read model holds an
// ACCESS SHARE lock on what it read, which the rebuild's swap must wait
// for. idle_in_transaction_session_timeout (5 minutes on the reader's
// role) is the reader's to lift (SET ... = 0), and it does not apply to a
// reader that keeps a query running. The swap gives up after its
// lock_timeout (30 s), so such a reader makes every rebuild fail, and
// while the swap waits, the projector's batches queue behind it. Found in
// review; no fix yet: the rebuild would have to end the sessions that
// block it.
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
	if _, err := reader.Exec(ctx, `SET idle_in_transaction_session_timeout = 0; BEGIN READ ONLY;
		SELECT count(*) FROM workspaces`); err != nil {
		t.Fatal(err)
	}
	started := time.Now()
	if _, err := e.projector(t, nil).Rebuild(ctx, nil); err != nil {
		t.Fatalf("rebuild beside a reader's open transaction failed after %s: %v", time.Since(started).Round(time.Second), err)
	}
}
