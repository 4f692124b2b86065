package events

import (
	"context"
	"fmt"

	"github.com/turnstile-dev/turnstile/fsm"
)

// heldChunk is how many outcome subjects one direct batch get of
// OutcomesHeld names: the server answers a multi-subject get that finds
// more than 1,024 messages (the last of each subject) with 413 Too Many
// Results and nothing else. 1,024 subjects of the longest command ids (128
// characters) make a request of about 150 KB on the default prefix, under
// the default max_payload of 1 MB.
const heldChunk = 1024

// OutcomesHeld reports, for each of ids, whether a message is stored on
// its outcome subject: presence only, the message is not decoded, so an
// outcome that cannot be decoded counts as held. It returns an error if an
// id is not a valid command id or a lookup fails.
//
// Any replica may answer, however far behind the stream leader, and no
// leader confirms a "none": it suits a caller for which a false "none"
// only means work done again that is safe to do again (the engine's
// recovery read, whose handling of a command finds its outcome), not
// Commit's check before a write. For the same reason an answer the server
// cuts short (it stops at its max_pending bytes, 64 MB by default, far
// more than 1,024 outcomes of clipped texts take) reports the rest as
// none.
//
// Up to maxParallelOutcomeChecks ids cost one direct get each, all at once
// on the connection's shared request inbox; more cost one direct batch
// get per heldChunk ids, one after another, each on an inbox of its own.
func (s *Store) OutcomesHeld(ctx context.Context, ids []string) ([]bool, error) {
	subjects := make([]string, len(ids))
	for i, id := range ids {
		if err := fsm.ValidateCommandID(id); err != nil {
			return nil, fmt.Errorf("outcomes held: %w", err)
		}
		subjects[i] = s.names.Outcome(id)
	}
	if len(subjects) <= maxParallelOutcomeChecks {
		found, err := s.eachHeld(ctx, subjects, s.directHeld)
		if err != nil {
			return nil, fmt.Errorf("outcomes held: %w", err)
		}
		return found, nil
	}
	// Chunks of even size: a remainder of a few subjects would cost a batch
	// get of its own all the same.
	chunks := (len(subjects) + heldChunk - 1) / heldChunk
	size := (len(subjects) + chunks - 1) / chunks
	found := make([]bool, 0, len(subjects))
	for from := 0; from < len(subjects); from += size {
		part, err := s.batchHeld(ctx, subjects[from:min(from+size, len(subjects))])
		if err != nil {
			return nil, fmt.Errorf("outcomes held: %w", err)
		}
		found = append(found, part...)
	}
	return found, nil
}
