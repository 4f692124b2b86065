package projector

import (
	"context"
	"fmt"
)

// The event stream has holes: a rejected, no-op or stale outcome carries a
// Nats-TTL (--rejected-retention) and leaves its stream sequence empty
// when it expires. Such a hole costs the read model nothing but that
// outcome's row, so the projector and rebuild pass holes. A missing event
// is another matter: the workspace's history would lack it. Envelopes
// carry a per-workspace seq (1, 2, 3…), so a missing event shows as an
// event whose seq skips ahead of its workspace's last, with a hole
// between the two: that is a GapError.

// missingCounter is what checkFollows asks the stream (events.Store).
type missingCounter interface {
	Missing(ctx context.Context, after, before uint64) (uint64, error)
	EventsHeld(ctx context.Context, ws string, after, before, upTo uint64) (uint64, error)
}

// GapError is an event the read model cannot take because events of its
// workspace before it are missing from the stream (purged or deleted). It
// is ErrGap.
type GapError struct {
	Workspace string
	// Seq and StreamSeq locate the event; After and AfterStreamSeq the
	// workspace's last event the read model has (0: none).
	Seq, StreamSeq        uint64
	After, AfterStreamSeq uint64
	// Missing is how many stream messages between the two are gone, at
	// least: the stream leader counts only the first run of them
	// (events.Store.Missing).
	Missing uint64
}

func (e *GapError) Error() string {
	return fmt.Sprintf("%v: workspace %s: event seq %d (stream seq %d) follows seq %d (stream seq %d), "+
		"and the stream lacks at least %d messages between them: events of %s were deleted or purged",
		ErrGap, e.Workspace, e.Seq, e.StreamSeq, e.After, e.AfterStreamSeq, e.Missing, e.Workspace)
}

// Is makes a GapError ErrGap.
func (e *GapError) Is(target error) bool { return target == ErrGap }

// checkFollows returns a GapError when event f skips ahead of its
// workspace's last event in prev (nil: none yet) and the stream lacks
// messages between the two. The stream is asked only at such a skip,
// which the engine never writes: it appends each workspace's events in
// seq order. A skip over messages the stream still holds on the
// workspace's subject is no gap: events no reader here can decode (a
// newer build's, during an upgrade), which were quarantined, not lost.
// Nor is a skip with nothing missing in between (a forged or replayed
// envelope the engine built on), which is applied, as before: the audit
// reports it, and it must not stall the read model. A hole alone is no gap
// either: an expired outcome's, or another workspace's, whose own next
// event tells. Both answers that pass a skip are the stream leader's
// (events.Store.EventsHeld, Missing): a lagging replica could still hold
// a deleted event and hide the gap.
func checkFollows(ctx context.Context, st missingCounter, prev *workspaceRow, f *eventFacts) error {
	var after, afterStream int64
	if prev != nil {
		after, afterStream = prev.LastEventSeq, prev.LastStreamSeq
	}
	if f.row.Seq <= after+1 {
		return nil
	}
	skipped := uint64(f.row.Seq - after - 1)
	held, err := st.EventsHeld(ctx, f.row.Workspace, uint64(afterStream), uint64(f.row.StreamSeq), skipped)
	if err != nil {
		return fmt.Errorf("workspace %s: event seq %d follows %d: %w", f.row.Workspace, f.row.Seq, after, err)
	}
	if held >= skipped {
		return nil
	}
	missing, err := st.Missing(ctx, uint64(afterStream), uint64(f.row.StreamSeq))
	if err != nil {
		return fmt.Errorf("workspace %s: event seq %d follows %d: %w", f.row.Workspace, f.row.Seq, after, err)
	}
	if missing == 0 {
		return nil
	}
	return &GapError{Workspace: f.row.Workspace, Seq: uint64(f.row.Seq), StreamSeq: uint64(f.row.StreamSeq),
		After: uint64(after), AfterStreamSeq: uint64(afterStream), Missing: missing}
}
