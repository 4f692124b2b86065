// Package status reports where Turnstile's data lives and how far behind
// each part is, from what JetStream says to any client allowed to read
// stream and consumer info (serve, and the NATS user role): the NATS
// servers holding the streams, each stream's replicas, leader and the lag
// of each replica, and each consumer's backlog. It only reads; a report is
// a snapshot, each stream's part taken at its own moment.
//
// NATS servers are known by the stream replicas they hold and by the
// server this client is connected to (the only one whose version a
// client can learn without the system account).
package status
