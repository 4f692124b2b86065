// Command turnstile is Turnstile's one binary: `turnstile serve` runs the
// whole system on one machine (embedded NATS, a local PostgreSQL, the
// engine, the provisioner, the projector and the HTTP API), and the other
// commands are its CLI: lifecycle commands, queries, history and audits,
// through serve's HTTP API when its URL is known, else directly over NATS
// and the SQL read model.
//
// Guarantees:
//   - Exit codes: 0 done, 1 error, 2 usage, 3 rejected (the reason on
//     stderr), 4 a wait timed out; one table (exitcode.go) maps rejection
//     codes to them.
//   - Every connection and serve flag can be set by a TURNSTILE_* variable
//     (the flag's name in upper case, '-' as '_'); the command line wins,
//     and a bad value a variable gave is reported under its name.
//   - Nothing is published before a command is validated: bad input exits 2
//     and changes nothing.
//   - serve on SIGINT or SIGTERM stops taking commands, lets the engine
//     finish or hand back the ones in flight, stops what it started and
//     exits 0.
package main
