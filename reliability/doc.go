// Package reliability proves, against the real `turnstile` binary, that no
// command is lost, no state lies and nothing wedges when the process under
// test is killed or its dependencies go away. Its guarantees, each checked
// at the end of every scenario:
//
//   - every command the load sent has exactly one stored outcome, and the
//     outcome the client was given is that stored one;
//   - no event is duplicated: each command id has at most one event, and
//     every workspace's per-workspace sequence runs 1, 2, 3, ... without a
//     gap or a repeat;
//   - every workspace's history replays legally through the lifecycle
//     (audit.Replayer), and `turnstile audit --all` exits 0;
//   - the read model reaches the stream's last sequence and equals what
//     `turnstile rebuild` makes from the stream.
//
// The scenarios are tests. The short form runs with `go test ./...` (and so
// in CI); the long form runs by hand with TURNSTILE_RELIABILITY_LONG=1, and
// TURNSTILE_RELIABILITY=0 turns the suite off (see docs/reliability.md).
// They build the binary, run it on loopback ports only, bound every wait
// with a deadline, and stop every process they start.
package reliability
