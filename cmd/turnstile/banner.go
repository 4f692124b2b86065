package main

import (
	"fmt"
	"path/filepath"
	"strings"
)

// banner tells the person who ran serve what is running where, which
// provisioner acts, and whether it is the simulator. With --log-format
// json the human banner is left out, so that stderr carries only JSON
// lines; the "serving" log line says the same. (auto keeps it: there the
// format follows whether stderr is a terminal, not a request for JSON.)
func (s *service) banner() {
	// A --nats-url may carry a user and password or a token: where, not who.
	natsURL := withoutUserinfo(s.natsURL)
	s.log.Info("serving", "http", s.httpURL, "nats", natsURL, "provisioner", s.backend.kind,
		"simulated", s.backend.kind == kindSim, "installation", s.installation, "default_image", s.backend.image,
		"allowed_images", s.cfg.allowedImages, "default_profile", s.cfg.defaultProfile, "allowed_profiles", s.cfg.allowedProfiles,
		"api_token_file", s.apiTokens.generated, "page", s.httpURL+"/", "version", readVersion().String())
	if s.a.logFormat == "json" {
		return
	}
	var b strings.Builder
	fmt.Fprintf(&b, "Turnstile is serving (%s)\n", readVersion())
	row := func(k, v string) { fmt.Fprintf(&b, "  %-13s %s\n", k, v) }
	auth := "bearer token required: " + s.apiTokens.note
	switch {
	case s.httpTLS != nil:
		auth += "; TLS"
	case !s.httpLoopback:
		auth += "; NO TLS beyond loopback: the token crosses the network in clear text"
	}
	row("HTTP API", fmt.Sprintf("%s (%s; /metrics, /healthz, /readyz)", s.httpURL, auth))
	row("Page", s.httpURL+"/ (the timeline; it asks for the API token, or takes it as /#token=..., which the browser never sends)")
	if s.embedded != nil {
		sync := "fsync before every ack"
		if !s.embedded.sync {
			sync = "fsync every 2 minutes (--nats-sync default)"
		}
		natsAuth := "the CLI signs in with the nkey in " + filepath.Join(s.a.dataDir, natsNkeyFile) + ", other clients need the token in " +
			s.embedded.tokenSource + "; their role publishes commands and reads"
		row("NATS", fmt.Sprintf("%s (embedded; JetStream in %s; %s; %s)", natsURL, s.embedded.storeDir, sync, natsAuth))
	} else {
		row("NATS", natsURL+" (given by --nats-url)")
	}
	row("Replicas", fmt.Sprintf("%d of every stream (--replicas; 'turnstile status' shows leaders and lag)", s.replicas))
	row("Partitions", fmt.Sprintf("%d, each handled by one engine at a time across serves ('turnstile status' shows which)", s.partitions))
	row("PostgreSQL", s.db.describe())
	switch s.backend.kind {
	case kindSim:
		row("Provisioner", "sim: a SIMULATOR, no containers run ("+s.backend.why+")")
	default:
		row("Provisioner", "docker ("+s.backend.why+")")
	}
	row("Default image", orDash(s.backend.image)+" ("+s.backend.imageNote+")")
	row("Containers", describePolicy(s.cfg))
	row("Installation", s.installation)
	secretsFrom := s.a.secretStore().Dir() + " ('turnstile secret set')"
	if s.cfg.secretsDir != "" {
		secretsFrom += ", then " + s.cfg.secretsDir
	}
	row("Secrets", secretsFrom)
	fmt.Fprintf(&b, "Try: turnstile create demo --wait    (Ctrl-C stops serve)\n")
	if s.apiTokens.generated != "" {
		fmt.Fprintf(&b, "     curl -H \"Authorization: Bearer $(cat %s)\" %s/v1/workspaces\n", s.apiTokens.generated, s.httpURL)
		if s.httpLoopback || s.httpTLS != nil {
			// The command line holds the token, the banner does not: the
			// banner may end up in a log.
			fmt.Fprintf(&b, "     xdg-open \"%s/#token=$(cat %s)\"    (the page; macOS: open)\n", s.httpURL, s.apiTokens.generated)
		}
	}
	fmt.Fprint(s.a.err, b.String())
}

// describePolicy says in one line how workspace containers are confined
// and what a spec may ask for beyond that.
func describePolicy(c serveConfig) string {
	limit := func(v string) string {
		if v == "" || v == "0" {
			return "none"
		}
		return v
	}
	cpus := "none"
	if c.defaultCPUs > 0 {
		cpus = fmt.Sprint(c.defaultCPUs)
	}
	profiles := c.defaultProfile
	if len(c.allowedProfiles) > 0 {
		profiles += "; a spec may ask for " + strings.Join(c.allowedProfiles, ", ")
	}
	images := "only the default image"
	if len(c.allowedImages) > 0 {
		images = "the default image and " + strings.Join(c.allowedImages, ", ")
	}
	maxCPUs := "none"
	if c.maxCPUs > 0 {
		maxCPUs = fmt.Sprint(c.maxCPUs)
	}
	return fmt.Sprintf("profile %s; images: %s; defaults: memory %s, cpus %s, pids %d; at most: memory %s, cpus %s",
		profiles, images, limit(c.defaultMemory), cpus, c.pidsLimit, limit(c.maxMemory), maxCPUs)
}
