package events_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/internal/testenv"
)

func TestIDTime(t *testing.T) {
	u, err := uuid.NewV7()
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	got, ok := events.IDTime(u.String())
	if !ok || got.Sub(now).Abs() > time.Second {
		t.Fatalf("IDTime(%s) = %v, %v; want about %v", u, got, ok, now)
	}
	if up, ok := events.IDTime(string(slices.Clone([]byte(u.String())))); !ok || !up.Equal(got) {
		t.Fatal("the same id read twice differs")
	}
	for _, id := range []string{
		uuid.NewString(),                       // v4
		"sys-" + u.String(),                    // a report's id
		u.String()[:35],                        // short
		"0190a5b8-0000-7000-c000-000000000000", // v7 but not the RFC 9562 variant
		"0190a5b8-0000-7000-8000-00000000000g", // not hex
		"0190a5b80000-7000-8000-0000-00000000", // dashes misplaced
		"configure-1",
	} {
		if _, ok := events.IDTime(id); ok {
			t.Errorf("IDTime(%q) carries a time", id)
		}
	}
	if got, ok := events.IDTime("0190A5B8-0000-7000-8000-000000000000"); !ok || got.UnixMilli() != 0x0190a5b80000 {
		t.Errorf("upper case: %v, %v", got, ok)
	}
}

// An outcome without an event (a rejection) takes the command id as its
// message id: within the duplicate window a later event of the same
// command, written without the outcome check (Unseen), is refused by it,
// and the writer gets the rejection back. Nothing else is stored.
func TestRejectionRefusesALaterUnseenEvent(t *testing.T) {
	store, _ := commitEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, cmd := range []fsm.Command{{ID: "create-r", Type: fsm.Create, Workspace: "rej"}} {
		if res, _ := store.Commit(ctx, []events.Write{decided(t, load(t, store, "rej"), cmd)}, events.CommitOptions{}); res[0].Err != nil {
			t.Fatal(res[0].Err)
		}
	}
	// X rejected (a create of a workspace that exists) ...
	x := fsm.Command{ID: "x-id", Type: fsm.Create, Workspace: "rej"}
	w := decided(t, load(t, store, "rej"), x)
	if w.Event != nil {
		t.Fatalf("setup: %+v", w.Outcome)
	}
	if res, _ := store.Commit(ctx, []events.Write{w}, events.CommitOptions{}); res[0].Err != nil || res[0].Existing != nil {
		t.Fatalf("rejection: %+v", res[0])
	}
	// ... then decided again as an accepted command, unchecked.
	again := fsm.Command{ID: x.ID, Type: fsm.Configure, Workspace: "rej", Spec: &fsm.Spec{Env: map[string]string{"A": "1"}}}
	w = decided(t, load(t, store, "rej"), again)
	if w.Event == nil {
		t.Fatalf("setup: %+v", w.Outcome)
	}
	w.UnseenUntil = time.Now().Add(time.Minute)
	res, _ := store.Commit(ctx, []events.Write{w}, events.CommitOptions{})
	if res[0].Err != nil || res[0].Existing == nil || res[0].Existing.Outcome != fsm.Rejected {
		t.Fatalf("the event after the rejection: %+v, want the rejection back", res[0])
	}
	if got := eventIDs(t, store, "rej"); !slices.Equal(got, []string{"create-r"}) {
		t.Fatalf("events of commands %v, want only the create", got)
	}
}

// An outcome without an event, for a command whose event is stored without
// its outcome (a crash between the two writes), is refused by the event's
// message id: ErrEventStored, and nothing is stored under the command id.
func TestOutcomeWithoutEventAfterItsEvent(t *testing.T) {
	store, js := commitEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	x := fsm.Command{ID: "x-ev", Type: fsm.Create, Workspace: "evfirst"}
	w := decided(t, load(t, store, "evfirst"), x)
	ev, err := store.EventMsgForTest(*w.Event, w.Expected)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.PublishMsg(ctx, ev); err != nil {
		t.Fatal(err)
	}
	// Decided again, the create is rejected now (the workspace exists).
	w = decided(t, load(t, store, "evfirst"), x)
	if w.Event != nil {
		t.Fatalf("setup: %+v", w.Outcome)
	}
	res, _ := store.Commit(ctx, []events.Write{w}, events.CommitOptions{})
	if !errors.Is(res[0].Err, events.ErrEventStored) {
		t.Fatalf("rejection after its own event: %+v, want ErrEventStored", res[0])
	}
	if _, ok, err := store.Outcome(ctx, x.ID); err != nil || ok {
		t.Fatalf("an outcome is stored beside the event (found %v, %v)", ok, err)
	}
	// The accepted outcome, recorded from the event, is taken.
	acc := w.Outcome
	acc.Outcome, acc.Rejection = fsm.Accepted, nil
	if res, _ := store.Commit(ctx, []events.Write{{Outcome: acc}}, events.CommitOptions{}); res[0].Err != nil || res[0].Existing != nil {
		t.Fatalf("the accepted outcome: %+v", res[0])
	}
}

// FuzzIDTime: IDTime reads a time exactly from the canonical UUIDv7s
// uuid.Parse takes as such, and never panics.
func FuzzIDTime(f *testing.F) {
	f.Add("01a244cd-e15a-7b62-9c65-adcacb050898")
	f.Add("0190A5B8-0000-7000-8000-000000000000")
	f.Add(uuid.NewString())
	f.Add("sys-01a244cd-e15a-7b62-9c65-adcacb050898")
	f.Fuzz(func(t *testing.T, id string) {
		got, ok := events.IDTime(id)
		u, err := uuid.Parse(id)
		want := err == nil && len(id) == 36 && u.Version() == 7 && u.Variant() == uuid.RFC4122
		if ok != want {
			t.Fatalf("IDTime(%q) ok = %v, uuid.Parse says %v (%v)", id, ok, want, err)
		}
		if ok {
			sec, nsec := u.Time().UnixTime()
			if got.Unix() != sec || got.Nanosecond()/1e6 != int(nsec)/1e6 {
				t.Fatalf("IDTime(%q) = %v, uuid says %v", id, got, time.Unix(sec, nsec))
			}
		}
	})
}

// On a replicated stream the server refuses a message id before it checks
// the subject's last sequence: an outcome without an event, stored by a
// racing handling of the same command after this one's lookup found none,
// refuses this one as a duplicate. That is not this handling's own earlier
// try (another record), so it is told apart: errOutcomeExists, after which
// the caller reads the stored outcome, rather than a success that would
// answer with an outcome never stored.
func TestRacingOutcomeRefusedByIDOnR3(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := testenv.StartNATSCluster(t, testenv.ClusterOptions{})
	_, js := c.Connect(t)
	names := events.NewNames("")
	if err := events.EnsureStreams(ctx, js, names, events.StreamOptions{Replicas: 3}); err != nil {
		t.Fatal(err)
	}
	store, err := events.OpenStore(ctx, js, names, events.Codec{})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	other := events.OutcomeRecord{CommandID: "raced", Workspace: "r3", CommandType: fsm.Stop, Outcome: fsm.Rejected,
		Rejection: fsm.Invalid(fsm.Stop, "the other handling"), ReceivedAt: now, DecidedAt: now}
	m, err := store.OutcomeMsgForTest(other)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.PublishMsg(ctx, m); err != nil {
		t.Fatal(err)
	}
	mine := other
	mine.Rejection, mine.DecidedAt = fsm.Invalid(fsm.Stop, "this handling"), now.Add(time.Millisecond)
	if _, err := store.PublishOutcomeForTest(ctx, mine); !errors.Is(err, events.ErrOutcomeExistsForTest) {
		t.Fatalf("an outcome refused by another's id: %v, want errOutcomeExists", err)
	}
	// Its own earlier try, sent again, is its own.
	if _, err := store.PublishOutcomeForTest(ctx, other); err != nil {
		t.Fatalf("the stored outcome sent again: %v", err)
	}
}

// A write is unseen only if its event goes out before UnseenUntil: past
// it, the outcome check is made as for any write.
func TestUnseenUntilIsCheckedWhenTheEventGoesOut(t *testing.T) {
	store, js := commitEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	gets := testenv.DirectGets(t, js.Conn(), store.Names().Outcome(""))
	for i, c := range []struct {
		until time.Time
		want  int
	}{{time.Now().Add(time.Minute), 0}, {time.Now().Add(-time.Second), 1}} {
		cmd := fsm.Command{ID: fmt.Sprintf("until-%d", i), Type: fsm.Create, Workspace: fmt.Sprintf("until-%d", i)}
		w := decided(t, load(t, store, cmd.Workspace), cmd)
		w.UnseenUntil = c.until
		if res, _ := store.Commit(ctx, []events.Write{w}, events.CommitOptions{}); res[0].Err != nil {
			t.Fatal(res[0].Err)
		}
		if got := gets(); got != c.want {
			t.Errorf("UnseenUntil %v from now: %d outcome lookups, want %d", time.Until(c.until).Round(time.Second), got, c.want)
		}
	}
}

// In a batch with writes that are checked, an unseen write's event does not
// wait for the check's round trip: it goes out first, whatever its place
// in the batch (a batch holds one write per workspace).
func TestUnseenEventsGoOutBeforeTheCheck(t *testing.T) {
	store, _ := commitEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	checked := fsm.Command{ID: "checked-1", Type: fsm.Create, Workspace: "checked"}
	unseen := fsm.Command{ID: "unseen-1", Type: fsm.Create, Workspace: "unseen"}
	wc := decided(t, load(t, store, checked.Workspace), checked)
	wu := decided(t, load(t, store, unseen.Workspace), unseen)
	wu.UnseenUntil = time.Now().Add(time.Minute)
	res, _ := store.Commit(ctx, []events.Write{wc, wu}, events.CommitOptions{})
	for i, r := range res {
		if r.Err != nil || r.Existing != nil {
			t.Fatalf("write %d: %+v", i, r)
		}
	}
	if res[1].EventSeq > res[0].EventSeq {
		t.Fatalf("the unseen event is at %d, after the checked one at %d: it waited for the check", res[1].EventSeq, res[0].EventSeq)
	}
}
