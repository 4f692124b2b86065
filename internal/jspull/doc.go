// Package jspull pulls a JetStream consumer's messages and tells each
// delivery from the server's statuses by its reply subject ($JS.ACK.…),
// which only the server sets, never by its headers or body.
//
// nats.go's pull reads any message with no body and a Status header as the
// server's status ("400 Bad Request" ends the pull, "100" is dropped as a
// heartbeat), and a NATS user who may publish commands can store exactly
// that: with --nats-url, where no relay refuses the header, one such
// command ended the engine's pull of its partition, and each read of the
// partition's unfinished commands, for good. Here it is a delivery like any
// other, which the engine refuses as malformed.
//
// Messages is the continuous pull (as nats.go's Consumer.Messages: a pull
// request at a time, another when half of it has come, idle heartbeats, a
// fresh request after a reconnect or a missed heartbeat, the pin of a
// priority group kept and sent back); Fetch is a one-off read of what a
// consumer has now. Both return nats.go's jetstream types and errors, so
// callers branch on them as before.
package jspull
