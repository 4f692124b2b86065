// Package events is the workspace event log: the versioned envelope and its
// JSON codec, and the event store on NATS JetStream. It is the only package
// that reads or writes the event stream through JetStream; the others use a
// Store (docs/architecture.md, "Layering").
//
// Guarantees:
//   - Commit is optimistic per workspace: an event lands only if nobody
//     appended to that workspace since the caller loaded it
//     (Nats-Expected-Last-Subject-Sequence), and a conflict (ErrConflict)
//     is told apart from a retry of a write that did land.
//   - A command has one outcome, ever, stored after its event (in one
//     atomic batch with it, or right after it): handling a command twice
//     stores nothing twice, and the second handling gets the first outcome
//     back (Written.Existing). Commit's doc says where the separate writes
//     leave a gap, and how the engine closes it.
//   - Every envelope carries the state it produces, so loading a workspace is
//     one get-last-message call whatever the length of its history.
//   - The codec refuses unknown event types and future schema versions with a
//     clear error; older versions pass through an upcaster.
//   - DecodeCommand accepts exactly what its strict decode accepts
//     (encoding/json refusing unknown fields, internal/jsonstrict,
//     fsm.Command.Validate, the size bound), and refuses the rest with the
//     strict decode's words; a one-pass reader of its own only makes the
//     accepted commands cheap (FuzzDecodeCommandFast holds the two equal).
//   - No reader stalls on a message it cannot use (undecodable, or
//     misaddressed to another workspace or command): Load, History, Replay
//     and Subscribe skip it or hand it on as Record.Unreadable, and Load
//     takes the newest readable envelope's state.
//     Tail and ReadRaw hand messages on undecoded, in stream order, to a
//     reader that decodes and quarantines on its own terms (the
//     projector); both pass over sequences the stream no longer holds
//     (expired outcomes) and leave judging them to the reader
//     (RawMsg.StreamSeq; Store.Missing counts what a span lacks).
package events
