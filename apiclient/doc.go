// Package apiclient is a Go client of Turnstile's HTTP API: the commands,
// the reads, waiting, the Server-Sent Events streams, the cluster's status
// and the webhooks, in the API's own views (api.CommandResult,
// api.Workspace, api.Event, status.Report, webhook.Info, ...). The CLI speaks to a serve through it when it has the
// API's URL, and always for the webhooks.
//
// Guarantees:
//   - Every request carries the bearer token; a command carries its id as
//     the Idempotency-Key, so sending it again yields its first outcome.
//     With ProveServer, over plain HTTP, the token goes only on
//     connections whose server proved first that it holds it
//     (api.ProofPath); any other is a *ProofError and sees no token.
//   - A refusal by the lifecycle is an outcome, not an error: Send returns
//     a CommandResult whose Rejection has the code, state, generation and
//     the commands allowed now. Any other error answer is an *Error with
//     the status and the API's body; the API's timeout is
//     client.ErrNoOutcome, an unknown workspace read.ErrNoWorkspace. A
//     request that got no answer is an *UnreachableError.
//   - Follow resumes a stream after a disconnect with Last-Event-ID: every
//     event once, in order, until its context ends.
//   - AuditAllProgress hands on serve's progress of the whole-stream
//     audit; an error serve reports at the stream's end is an *Error as
//     the plain answer's is, and a stream that ends without its report is
//     an error, never a report.
//   - It keeps no state between calls but the http.Client's connections.
package apiclient
