package projector_test

import (
	"context"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/fsm"
)

// TestWellFormedButUnstorable publishes messages that decode but that
// PostgreSQL refuses to store: an outcome whose command id (equal to its
// subject's token, as the check of its address wants) and an envelope
// whose status are longer than a btree index entry may be (2704 bytes,
// incompressible). The engine writes neither (ids of at most 128
// characters, known statuses); only a writer of the event stream that is
// not serve could. Each must be quarantined, and the good events after it
// projected: on main the projector retried the batch for ever ("index row
// size … exceeds btree version 4 maximum 2704"), a stall of every
// workspace. Found in review.
func TestWellFormedButUnstorable(t *testing.T) {
	e := newEnv(t)
	g := newGenerator(e.names, 3, 11)
	g.publish(t, e.js, 20)
	rng := rand.New(rand.NewPCG(1, 2))
	const alnum = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
	long := func(n int) string {
		b := make([]byte, n)
		for i := range b {
			b[i] = alnum[rng.IntN(len(alnum))]
		}
		return string(b)
	}

	id := long(2800)
	out, err := events.EncodeOutcome(events.OutcomeRecord{CommandID: id, Workspace: g.ids[0], CommandType: fsm.Start,
		Outcome: fsm.Rejected, State: fsm.Running, Rejection: &fsm.Rejection{Code: fsm.CodeNotFound, Message: "forged"},
		ReceivedAt: time.Now().UTC(), DecidedAt: time.Now().UTC()})
	if err != nil {
		t.Fatal(err)
	}
	st, err := e.js.Stream(context.Background(), e.names.EventStream())
	if err != nil {
		t.Fatal(err)
	}
	last, err := st.GetLastMsgForSubject(context.Background(), e.names.Event(g.ids[1]))
	if err != nil {
		t.Fatal(err)
	}
	status := `"status":"` + string(g.states[g.ids[1]].Status) + `"`
	if !strings.Contains(string(last.Data), status) {
		t.Fatalf("no %s in %s", status, last.Data)
	}
	env := strings.Replace(string(last.Data), status, `"status":"`+long(3000)+`"`, 1)
	for _, m := range []*nats.Msg{{Subject: e.names.Outcome(id), Data: out}, {Subject: e.names.Event(g.ids[1]), Data: []byte(env)}} {
		publishAll(t, e.js, m)
		g.publish(t, e.js, 5)
	}

	stop := run(t, e.projector(t, nil))
	e.waitCaughtUp(t, 30*time.Second)
	stop()
	var dead int
	if err := e.pool.QueryRow(context.Background(), `SELECT count(*) FROM dead_letters`).Scan(&dead); err != nil || dead != 2 {
		t.Fatalf("%d dead letters (%v), want the 2 unstorable messages", dead, err)
	}
}
