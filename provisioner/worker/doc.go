// Package worker carries out what the event log asks of the container
// engine and reports back, always naming the generation it acted for.
//
// Guarantees:
//   - Worker: actions of one workspace run one at a time, in event order.
//     When a newer generation arrives, the running action's context is
//     cancelled and the action has returned before the newer one starts, so
//     a slow provision of generation 1 can never leave a container behind
//     after a stop or delete of generation 2. An action interrupted by a
//     crash is redone (backends are idempotent per workspace and generation)
//     because its event is acknowledged only after the action is reported.
//   - Supervisor: a workspace in provisioning, stopping or deleting longer
//     than its deadline gets deadline_exceeded for that generation; the
//     reconciler removes containers and volumes of deleted or unknown
//     workspaces (after the log confirms it), stops containers of stopped
//     or failed ones, and reports running workspaces whose container is
//     gone. It logs each action with why.
//   - Watcher: a container that exits or vanishes becomes container_exited
//     for its generation; the engine records it only if that generation is
//     still the running one.
//
// Reports are commands with deterministic ids (op, workspace, generation), so
// a redone action or a second observer of the same exit never counts twice.
package worker
