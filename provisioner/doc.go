// Package provisioner turns a workspace's desired spec into one running
// container, and reports what became of it.
//
// Guarantees every implementation (docker, sim) keeps, checked by the
// contract suite in provisionertest:
//   - Idempotent per (workspace, generation): Provision of the generation
//     that already runs adopts that container (starting it if it stopped);
//     a container of an older generation is stopped and removed first; one of
//     a newer generation is never touched (the request is superseded).
//   - Provision returns only when the container runs and, if its image has a
//     health check, is healthy; or fails with a *Error whose Reason a person
//     can act on.
//   - Cancelling Provision's context returns promptly and leaves no container
//     of that generation running; whatever is older than the next action's
//     generation is removed by that action (Stop, Delete, a newer Provision).
//   - "Not found" on Stop and Delete is success; Delete removes the
//     container and the workspace's volume.
//   - Installation isolation: an implementation acts only on containers and
//     volumes labelled with its own installation id. A foreign container
//     named ws-<id> makes Provision fail with CodeNameTaken; Stop, Delete,
//     Inspect, List and ListVolumes leave it alone.
//   - ListVolumes shows every workspace volume of this installation, also
//     those whose container is gone, so that a reconciler can find leaked
//     ones.
//   - Policy: Provision runs a spec only as the backend's Policy allows:
//     its image is the default or matches an allowed pattern, its security
//     profile is allowed, its limits are within the maximums; otherwise it
//     fails with CodeNotAllowed (or CodeInvalid) before anything is touched.
//     A spec with no limits gets the policy's defaults, and its labels are
//     applied under LabelUserPrefix only.
//   - Watch reports every exit and every removal of this installation's
//     containers, each with its workspace and generation, so callers can
//     discard outcomes of superseded generations.
//
// Calls for one workspace must not overlap (the worker runs them in order);
// calls for different workspaces may run concurrently.
package provisioner
