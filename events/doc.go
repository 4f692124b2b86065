// Package events is the workspace event log: the versioned envelope and its
// JSON codec, and the event store on NATS JetStream.
//
// Guarantees:
//   - Append is optimistic per workspace: it lands only if nobody appended to
//     that workspace since the caller loaded it (Nats-Expected-Last-Subject-Sequence),
//     and idempotent per command id (Nats-Msg-Id), including a retry after a
//     timeout whose first try did land.
//   - Every envelope carries the state it produces, so loading a workspace is
//     one get-last-message call whatever the length of its history.
//   - The codec refuses unknown event types and future schema versions with a
//     clear error; older versions pass through an upcaster.
//   - No reader stalls on a message it cannot use (undecodable, or
//     misaddressed to another workspace or command): Load, History, Replay
//     and Subscribe skip it or hand it on as Record.Unreadable, and Load
//     takes the newest readable envelope's state.
package events
