// Package client sends commands to Turnstile and waits for their outcomes.
//
// Guarantees:
//   - A command is validated before anything is published: an invalid id or
//     a malformed command never reaches the stream.
//   - A command is published durably (JetStream acknowledges it) under its
//     command id, so sending the same command again, after a timeout or a
//     crash, yields its one outcome and never a second effect.
//   - Waiting is bounded by the caller's context, and each request to
//     JetStream by Options.RequestTimeout: one lost with the connection
//     is given up (a publish tried again) rather than waited out.
//   - A client sends user commands to <prefix>.cmd.<workspace>; only one
//     made with Options.System (serve's provisioning side) may send system
//     reports, which go to <prefix>.sys.<workspace>.
package client
