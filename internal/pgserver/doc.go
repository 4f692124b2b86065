// Package pgserver runs a private PostgreSQL from the binaries installed on
// the machine: for tests, and for `turnstile serve` when no database URL is
// given.
//
// Guarantees:
//   - Start returns only once the server accepts connections, or with an
//     error that carries the tail of the server's log; it never sleeps to
//     wait, it polls bounded by the caller's context.
//   - The server listens on 127.0.0.1 only (and on a unix socket inside its
//     data directory) and requires a password (scram-sha-256) that Start
//     generates once and keeps beside the data directory.
//   - When the process runs as root, initdb and postgres run as the OS user
//     "postgres" (PostgreSQL refuses to run as root); otherwise as the
//     current user.
//   - The server is a child process: Stop shuts it down (fast mode) and
//     waits, and it is told to quit if this process dies.
package pgserver
