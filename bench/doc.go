// Package bench holds the peer Turnstile is measured against: the design it
// replaces, the workspace lifecycle as a PostgreSQL row-lock state machine.
// Its benchmark (versus_test.go) runs Turnstile and the peer side by side
// on the same command mix; see docs/benchmarks.md. streams_test.go drives
// the engine's write pattern into 1, 2 and 4 event streams (issue 13 item
// 3) and puts it and one engine on a 3-node R3 cluster beside one node.
// floor_test.go measures the bare JetStream message pattern of any engine
// of this architecture (command, pull, CAS event, outcome, reply) beside
// the engine and the raw CAS rate: the engine's floor.
//
// Guarantees:
//   - Same rules, other substrate: a command is decided by the same pure
//     fsm.Decide and folded by fsm.Apply that Turnstile's engine uses, inside
//     one transaction that holds the workspace row's lock (SELECT … FOR
//     UPDATE), writes the row and one history row, and commits. Only the
//     storage differs.
//   - provision_succeeded is a generation-guarded conditional UPDATE (with
//     its history row, in one statement): a report of any generation but
//     the current one, or for a workspace that is not provisioning, changes
//     nothing and is answered stale, as fsm.Decide answers it.
//   - A refused, stale or no-op command writes nothing; a malformed one is
//     an error naming what is wrong, before anything is sent.
//   - Unlike Turnstile it does not deduplicate commands by id: a retried
//     command runs again. That is the peer's design, not a handicap.
package bench
