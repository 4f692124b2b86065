// Package engine is the command consumer: it pulls commands from
// <prefix>.cmd.>, decides each against its workspace's state with package
// fsm, appends the resulting event and records the command's outcome.
//
// Guarantees:
//   - One command per workspace at a time, in stream order; different
//     workspaces in parallel up to Config.Parallel.
//   - At-least-once delivery made exactly-once in effect: a redelivered
//     command gets the outcome it already had and never a second event.
//   - Correctness never rests on being the only engine: every append is a
//     compare-and-set on the workspace's last event, and a conflict reloads
//     and decides again.
//   - Events and outcomes of many commands are written together in atomic
//     batches (JetStream's group commit); a batch that fails is retried one
//     command at a time.
package engine
