// Package e2e holds end-to-end tests: they build the turnstile binary and
// drive it as a user would, as processes with ports, exit codes, stdout and
// stderr, against the real embedded NATS and a real local PostgreSQL.
//
// Guarantees:
//   - The README's five-minute tour runs verbatim (tour_test.go parses it
//     from README.md), so the README cannot drift from the binary.
//   - Every serve runs in a fresh data directory on free ports and is
//     stopped with SIGTERM when its test ends; no test waits by sleeping.
package e2e
