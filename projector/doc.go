// Package projector folds the TURNSTILE_EVENTS stream (events and command
// outcomes) into the PostgreSQL read model of package migrations: the
// workspaces, workspace_events, commands and dead_letters tables.
//
// Guarantees:
//   - Exactly-once application: each batch of messages and the checkpoint
//     (the last stream sequence applied) commit in one PostgreSQL
//     transaction, so a crash at any point either applies a batch with its
//     checkpoint or neither. PostgreSQL, not a NATS ack, is the source of
//     truth: consumption always restarts from checkpoint+1.
//   - The checkpoint is compare-and-set: a batch commits only if the
//     checkpoint is still where the batch began. Two projectors on one
//     database, or a projector racing a rebuild, never apply a message twice
//     or skip one; the loser resumes from the checkpoint it finds.
//   - Stream order: messages are applied in stream sequence order. A stream
//     sequence the stream no longer holds (a rejected, no-op or stale
//     outcome past --rejected-retention) is passed and counted. An event
//     missing from a workspace's history (deleted or purged) stops the
//     projector loudly (ErrGap, a *GapError naming the workspace) rather
//     than producing a read model that silently lacks it: the workspace's
//     next event skips ahead of its last with a hole between them.
//   - One bad message stalls nothing: a message no reader can use
//     (events.Unreadable: undecodable, or misaddressed to another workspace
//     or command) is quarantined, recorded in dead_letters in its batch and
//     passed by the checkpoint, counted and logged once; a rebuild records
//     the same.
//   - Run recovers by itself: when PostgreSQL or NATS fail it logs, backs off
//     (bounded exponential) and resumes from the checkpoint.
//   - Rebuild builds a complete new read model beside the live one, which
//     keeps serving, and swaps it in with one transaction.
package projector
