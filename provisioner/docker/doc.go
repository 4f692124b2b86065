// Package docker is the Provisioner on a Docker Engine, through the Engine
// API client (github.com/docker/docker/client).
//
// Guarantees, beyond those of package provisioner:
//   - It acts only on containers and volumes labelled
//     turnstile.installation=<Config.Installation>. Anything else, even
//     when named ws-<id>, is never stopped, removed or adopted.
//   - One container per workspace, named ws-<id>, labelled with its
//     workspace, generation, installation and security profile (the spec's
//     labels only under turnstile.label.), with restart policy "no", the
//     spec's env, and the named volume ws-<id>-data (labelled too) mounted
//     at /data. The volume survives new generations and goes only with
//     Delete. Anonymous volumes of the image's VOLUMEs go with their
//     container, at every replace and delete.
//   - Confined as Config.Policy says (provisioner.Policy): every
//     capability dropped and only the profile's added back,
//     no-new-privileges, under restricted a read-only root filesystem with
//     a noexec tmpfs /tmp (and one at each other path the image declares a
//     VOLUME, instead of a volume on disk) and a non-root user (NonRootUser when the image
//     would run as root), CPU, memory (no swap beyond it) and process
//     limits, the policy's defaults where the spec sets none. A spec image
//     other than the default must be allowed by the policy and be a name
//     (tag or digest) of the image the engine finds, never an id prefix.
//   - Images are never pulled: a missing image fails Provision with
//     CodeImageNotFound and a reason that says to build it.
//   - Provision waits for running, and for healthy when the image has a
//     HEALTHCHECK, waking on the container's events (with a slow poll as a
//     safety net); a cancelled Provision force-removes the container of its
//     generation (with a detached, bounded context) before it returns, so
//     nothing it started outlives it. Creates of containers and volumes are
//     not cut short by ctx (only by CleanupTimeout), so nothing half-made
//     escapes that removal.
//   - A create that times out, or finds the name reserved although inspect
//     finds no container (a create or removal still in flight in the
//     engine), is an unknown outcome, not a failure: Provision looks again,
//     with growing pauses, until the container appears (adopted if it is
//     this generation's) or the name is free, for as long as its context
//     lasts. Only replacing one container after another under the name
//     (more than a few times) fails it.
//   - Watch follows Docker's event stream (die, oom, destroy) and resumes it
//     after a broken connection from the last event seen, so no exit is lost
//     while the daemon stays up.
package docker
