// Package sim is a SIMULATED Provisioner: a stand-in for a Docker Engine,
// for development, demos and load tests. No container ever runs; New logs
// a warning saying so.
//
// Guarantees:
//   - The semantics of package provisioner, as the docker backend keeps
//     them (the same contract suite runs against both): generations,
//     adopt/replace, "not found" is success for Stop and Delete,
//     installation isolation on a shared Host, the same names and labels,
//     and Watch reporting the same exits and removals Docker's event stream
//     would (a graceful stop exits with code 0, as the agent does).
//   - The same provisioner.Policy checks as the docker backend (allowed
//     images and profiles, maximum limits), so a refusal reads the same
//     without Docker; Host.Profile tells which profile a container got.
//   - Deterministic for a given Seed and call order: latency (uniform in
//     [MinLatency, MaxLatency] per Provision, Stop and Delete) and injected
//     Provision failures (FailureRate) come from math/rand/v2 seeded by it.
//   - It honours the test agent's environment in the spec, as if every
//     image ran internal/agent: AGENT_START_DELAY delays readiness,
//     AGENT_EXIT_AFTER with AGENT_EXIT_CODE makes the container exit.
//   - Persistence on request: a Host from OpenHost (or a Config with a
//     StateFile) keeps its containers and volumes in a JSON file, replaced
//     atomically before any change is reported, and loads it when opened,
//     so they outlive the process as Docker's outlive serve. NewHost keeps
//     everything in memory.
//   - Host.Kill and Host.Remove simulate a crash and "docker rm -f", for
//     watcher and reconciler tests.
package sim
