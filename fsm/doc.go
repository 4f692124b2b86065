// Package fsm is the workspace lifecycle: its states, commands, events and the
// rules that connect them.
//
// Guarantees:
//   - Pure: no I/O, no clock, no randomness. Decide and Apply are functions of
//     their arguments, so a history replays to the same states anywhere.
//   - Every legal transition is in one table (lifecycle.go), enforced through
//     github.com/looplab/fsm; anything not in it is a typed *Rejection.
//   - Generations guard asynchronous outcomes: a system command of any
//     generation but the current one, or for a state it does not answer, is
//     stale and never changes the state.
package fsm
