package status

import (
	"fmt"
	"strings"
)

// Container engine identities, as serves announce them in their engines'
// member entries (engine.Config.Provisioner): the kind, a space, and what
// tells two engines of that kind apart.
const (
	KindDocker = "docker"
	KindSim    = "sim"
)

// DockerProvisioner is the identity of the Docker engine whose daemon ID
// is id: the same through any address that reaches that daemon.
func DockerProvisioner(id string) string { return KindDocker + " " + id }

// SimProvisioner is the identity of a simulator keeping its containers in
// stateFile (an absolute path) on host. A simulator is the process's own:
// it reads its state file when it opens and then keeps its containers in
// memory, so no two live serves see each other's simulated containers;
// the state file is what a restart of the same serve continues from.
func SimProvisioner(stateFile, host string) string { return KindSim + " " + stateFile + "@" + host }

// ProvisionerKind is the kind of a container engine identity (KindDocker,
// KindSim), "" when none was announced.
func ProvisionerKind(identity string) string {
	kind, _, _ := strings.Cut(identity, " ")
	return kind
}

// ShortProvisioner names a container engine in a table column: "docker"
// and the daemon ID's first 12 characters, "sim" for every simulator
// (the hint and -o json tell them apart), "" when none was announced.
func ShortProvisioner(identity string) string {
	kind, rest, _ := strings.Cut(identity, " ")
	if kind == KindDocker && len(rest) > 12 {
		return kind + " " + rest[:12]
	}
	if kind == KindSim {
		return kind
	}
	return identity
}

// OtherProvisioners reports live engines that announce different
// container engines (members that announce none, of earlier releases,
// are left out): one line naming each container engine and the serves on
// it, for an operator's summary. Each serve reconciles every workspace
// against its own container engine, so serves on different ones report
// each other's workspaces exited and remove each other's containers.
// Serve refuses to start beside another Docker engine or a simulator
// beside Docker; several simulators start (the load tests run them), and
// get a line of their own, since the advice differs.
func (r Report) OtherProvisioners() []string {
	var order []string
	on := map[string][]string{}
	hint := map[string]string{}
	docker := false
	for _, e := range r.Engines {
		if e.Provisioner == "" {
			continue
		}
		if _, ok := on[e.Provisioner]; !ok {
			order = append(order, e.Provisioner)
		}
		on[e.Provisioner] = append(on[e.Provisioner], e.Name)
		if hint[e.Provisioner] == "" {
			hint[e.Provisioner] = e.ProvisionerHint
		}
		docker = docker || ProvisionerKind(e.Provisioner) != KindSim
	}
	if len(order) < 2 {
		return nil
	}
	engines := make([]string, len(order))
	for i, p := range order {
		engines[i] = fmt.Sprintf("%s on %s", strings.Join(on[p], ", "), describeProvisioner(p, hint[p]))
	}
	if !docker {
		return []string{fmt.Sprintf("the serves simulate their containers on %d different simulators (%s): a simulator is its serve's own, "+
			"so each serve reports the running workspaces simulated by another as exited; fine for load tests of the engines, "+
			"not for workspaces that must keep running: run one serve, or all on one Docker engine", len(order), strings.Join(engines, "; "))}
	}
	return []string{fmt.Sprintf("the serves provision on %d different container engines (%s): each reports the workspaces "+
		"whose containers are on another engine as exited and removes the containers it does not know; "+
		"restart the serves onto one Docker engine (the same DOCKER_HOST for every serve)", len(order), strings.Join(engines, "; "))}
}

// describeProvisioner names a container engine by its identity and, when
// announced, its description.
func describeProvisioner(id, hint string) string {
	if hint == "" {
		return id
	}
	return id + " (" + hint + ")"
}
