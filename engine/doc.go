// Package engine is the command consumer: it pulls user commands from
// <prefix>.cmd.> and system reports from <prefix>.sys.>, decides each
// against its workspace's state with package fsm, appends the resulting
// event and records the command's outcome.
//
// Guarantees:
//   - One command per workspace at a time, in stream order; different
//     workspaces in parallel up to Config.Parallel. With one engine on the
//     durable this holds across an engine restart (recover.go) and across
//     deliveries lost on the way, e.g. with a NATS node (gap.go).
//   - At-least-once delivery made exactly-once in effect: a redelivered
//     command gets the outcome it already had and never a second event.
//   - Correctness never rests on being the only engine: every append is a
//     compare-and-set on the workspace's last event, and a conflict reloads
//     and decides again.
//   - System report types count only from <prefix>.sys.> (writable by
//     serve's own parts alone) and user command types only from
//     <prefix>.cmd.>; anything else is refused as invalid and changes
//     nothing. User command ids never take the reserved sys- namespace.
//   - A direct reply goes only to subjects under the configured reply
//     prefixes (_INBOX. by default), never where a sender points it.
//   - Events and outcomes of many commands are handed to
//     events.Store.Commit together (one round trip for all); how they are
//     written, and how a refusal is sorted out, is that package's.
package engine
