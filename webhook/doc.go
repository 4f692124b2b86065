// Package webhook delivers the workspace event stream to HTTP receivers
// that subscribed with `turnstile webhook add` (issue 14 item 4).
//
// Guarantees:
//   - At least once, in stream order, per webhook: each webhook has its own
//     durable JetStream consumer on the event subjects with MaxAckPending 1
//     (created and deleted through events.Store),
//     and a message is acked only after the receiver answered 2xx. A
//     receiver that was down (or a serve that restarted) gets every event
//     since its last ack, in order, with no gaps; a redelivery carries the
//     same delivery id, so a receiver can drop repeats. The event being
//     tried when serve stops is handed back at once; after a crash (or a
//     restart together with an embedded NATS) it comes again within
//     AckWait. An event handed out again while a serve still tries it
//     (its heartbeats did not reach the server for AckWait) is left to
//     the new delivery: before each retry the serve asks the consumer
//     whether it delivered anything since, and stops if so, so that its
//     next attempt cannot reach the receiver after a later event.
//   - Every delivery is signed: Turnstile-Signature: t=<unix>,v1=<hex
//     HMAC-SHA256(secret, t + "." + body)>; Verify checks one. The secret is
//     made at Add, returned once, and never listed.
//   - A failed attempt (non-2xx, timeout, refused connection) is retried
//     for as long as the webhook exists, with capped exponential back-off
//     and jitter; each attempt has its own timeout.
//   - Serve never dials a loopback, private, link-local or otherwise
//     internal address for a webhook unless it was started with
//     AllowPrivate: the check runs on the address actually dialled (a
//     net.Dialer Control function), so a name that resolves elsewhere later
//     (DNS rebinding) is refused too. Redirects are not followed, and no
//     proxy from the environment is used.
//   - At most MaxWebhooks webhooks, also when adds race, in one serve or
//     in several on the same bucket: the entries' order in the bucket's
//     stream decides. An add at the limit is refused before it writes
//     anything (so retries at the limit do not grow the bucket); one that
//     a concurrent add put over is refused after taking back its entry,
//     and never made a consumer (until then a list can show it; if taking
//     it back fails, the add answers ErrUnavailable and the webhook
//     stays).
//   - A webhook's consumer never stands without its entry: Add stores the
//     entry before it makes the consumer, and Remove and a failed Add's
//     undo delete the consumer before the entry, the entry only once the
//     consumer is gone. Whatever a failed Add leaves is therefore listed,
//     and Remove takes it. A Remove of a webhook whose Add is making its
//     consumer does not leave it behind: the Add reads its entry back once
//     the consumer is made and, finding it gone, deletes the consumer and
//     answers ErrNotFound; the Remove deletes the consumer again after its
//     purge, for an Add that read its entry before. Only if that last
//     deletion fails (answered ErrUnavailable) is a consumer left alone;
//     Remove takes a consumer webhook-<id> with no entry, as it takes one
//     an Add of an earlier version could leave.
//   - Unreadable stream messages (events.Unreadable) are skipped and
//     counted, never delivered and never a stall.
//
// Subscriptions live in a JetStream KV bucket (<PREFIX>_WEBHOOKS) that only
// serve's own NATS connections may read: its secrets are outside the user
// and admin roles' permissions. A removed webhook's purge marker expires
// after MarkerTTL, so removed webhooks do not pile up in the bucket.
package webhook
