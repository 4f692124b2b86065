package main

import (
	"fmt"
	"strings"
)

// banner tells the person who ran serve what is running where, which
// provisioner acts, and whether it is the simulator.
func (s *service) banner() {
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
	if s.embedded != nil {
		sync := "fsync before every ack"
		if !s.embedded.sync {
			sync = "fsync every 2 minutes (--nats-sync default)"
		}
		natsAuth := "no token: loopback only"
		if s.embedded.token != "" {
			natsAuth = "token required: nats://TOKEN@host:port"
		}
		row("NATS", fmt.Sprintf("%s (embedded; JetStream in %s; %s; %s)", s.natsURL, s.embedded.storeDir, sync, natsAuth))
	} else {
		row("NATS", s.natsURL+" (given by --nats-url)")
	}
	row("PostgreSQL", s.db.describe())
	switch s.backend.kind {
	case kindSim:
		row("Provisioner", "sim: a SIMULATOR, no containers run ("+s.backend.why+")")
	default:
		row("Provisioner", "docker ("+s.backend.why+")")
	}
	row("Default image", orDash(s.backend.image)+" ("+s.backend.imageNote+")")
	row("Installation", s.installation)
	secretsFrom := s.a.secretStore().Dir() + " ('turnstile secret set')"
	if s.cfg.secretsDir != "" {
		secretsFrom += ", then " + s.cfg.secretsDir
	}
	row("Secrets", secretsFrom)
	fmt.Fprintf(&b, "Try: turnstile create demo --wait    (Ctrl-C stops serve)\n")
	if s.apiTokens.generated != "" {
		fmt.Fprintf(&b, "     curl -H \"Authorization: Bearer $(cat %s)\" %s/v1/workspaces\n", s.apiTokens.generated, s.httpURL)
	}
	fmt.Fprint(s.a.err, b.String())
	s.log.Info("serving", "http", s.httpURL, "nats", s.natsURL, "provisioner", s.backend.kind,
		"simulated", s.backend.kind == kindSim, "installation", s.installation, "default_image", s.backend.image)
}
