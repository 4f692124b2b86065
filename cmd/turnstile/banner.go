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
	auth := "no token: loopback only"
	if s.cfg.apiToken != "" {
		auth = "bearer token required"
	}
	row("HTTP API", fmt.Sprintf("%s (%s; /metrics, /healthz, /readyz)", s.httpURL, auth))
	if s.embedded != nil {
		sync := "fsync before every ack"
		if !s.embedded.sync {
			sync = "fsync every 2 minutes (--nats-sync default)"
		}
		natsAuth := "clients need the token in " + s.embedded.tokenSource + "; its role publishes commands and reads"
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
	fmt.Fprintf(&b, "Try: turnstile create demo --wait    (Ctrl-C stops serve)\n")
	fmt.Fprint(s.a.err, b.String())
	s.log.Info("serving", "http", s.httpURL, "nats", s.natsURL, "provisioner", s.backend.kind,
		"simulated", s.backend.kind == kindSim, "installation", s.installation, "default_image", s.backend.image)
}
