// Package pull is the one loop that reads a JetStream consumer's message
// iterator, shared by the engine (commands) and the provisioner worker
// (events).
//
// Guarantees:
//   - Messages reach the handler one at a time, in the order the iterator
//     gives them.
//   - The loop ends when the iterator is stopped or drained (Next takes no
//     context: callers stop the iterator to end it), or when its context
//     has ended at a failed read or during the wait after one, returning
//     nil; or when the iterator ended by itself (its consumer deleted, a
//     pull refused for good, the connection closed), returning an error
//     that wraps ErrEnded and the cause, so the caller can make a new one;
//     never otherwise.
//   - A failed read (missed heartbeats while NATS is away: the iterator
//     recovers by itself) is logged and followed by a growing, jittered
//     wait, so the loop never spins; the first good read resets it.
package pull
