// Package api is Turnstile's HTTP API: the commands of the CLI and of the
// NATS subjects, the reads of package read, and waiting for a state, as
// JSON over net/http. It holds no SQL of its own.
//
// Guarantees:
//   - A command is answered with its recorded outcome: 202 when accepted
//     (the work it asks for is under way), 200 for a no-op, and for a
//     refusal the status of one table (StatusOf) with the rejection's code,
//     message, state, generation and the commands allowed now.
//   - The Idempotency-Key header is the command id: repeating a request
//     with the same key yields the first one's outcome, never a second
//     effect; the key of a different command is refused with 422.
//   - Bad input is refused with 400 naming the field before anything is
//     published; an unknown workspace is 404.
//   - Reads say what they reflect: the read model's rows carry the event
//     sequence and generation they are current to, and a single workspace's
//     read also names the newest event in the stream.
//   - Waiting (GET .../wait) watches the event store, the source of truth,
//     not the read model: 200 once the state is reached, 408 at the timeout.
//   - Never open: every route but /healthz, /readyz, ProofPath and the
//     timeline page's static files (package ui, which hold no data) needs
//     a bearer token (at least MinTokenLength characters) of
//     Config.Tokens, and the commands it sends are recorded with the actor
//     "api:<token name>". ProofPath answers a client's fresh nonce with a
//     TokenProof per token, so that a client can check it reached serve
//     before it sends its token; a proof is no credential.
//   - Writes only from programs: a write whose Content-Type is not
//     application/json is refused (415), a browser's cross-origin write is
//     refused (403), and on a loopback listener a Host that is not a
//     loopback name is refused (421, against DNS rebinding); a refused
//     request publishes nothing.
//   - Watchable: the events routes page (after, since, limit, a next_after
//     cursor) or, with follow=1, stream Server-Sent Events whose id is the
//     event's sequence, so a reconnect with Last-Event-ID gets every later
//     event once; each event says its cause. The outcomes route pages and
//     follows the same way what became of each command, refused and stale
//     ones included. Explain says what a workspace waits for. GET
//     /v1/audit, asked for application/x-ndjson, streams its progress and
//     ends with the report or the error as its last line. A query
//     parameter a route does not take is refused (400).
//   - Bounded: a request body must arrive within ReadTimeout, an answer be
//     written within WriteTimeout (a /wait within its timeout plus
//     WaitGrace; each write of a follow stream within WriteTimeout), and
//     at most MaxWaits waits, follow streams and GET /v1/audit requests
//     are open at once (429 beyond); follow streams end when the
//     request's context does.
package api
