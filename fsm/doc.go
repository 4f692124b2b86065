// Package fsm is the workspace lifecycle: its states, commands, events and the
// rules that connect them.
//
// Guarantees:
//   - Pure: no I/O, no clock, no randomness. Decide and Apply are functions of
//     their arguments, so a history replays to the same states anywhere.
//   - Every rule is stated once, in one table (rules in lifecycle.go): the
//     states a command is accepted from, the event it records and the state
//     that event leads to. Decide, Apply, CommandFor and the looplab/fsm
//     transitions that enforce it are all read from it; anything not in it
//     is a typed *Rejection, and Validate returns that type itself.
//   - Generations guard asynchronous outcomes: a system command of any
//     generation but the current one, or for a state it does not answer, is
//     stale and never changes the state.
package fsm
