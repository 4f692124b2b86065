package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/turnstile-dev/turnstile/fsm"
)

// FuzzCLI runs the real command tree (cobra parsing, flags, variables,
// argument checks, the root's PersistentPreRunE and each command's own
// checks) on an arbitrary command line and environment, and checks:
//
//   - it never panics, and ends with exit 0, 1 (error) or 2 (usage): with
//     no server, nothing can be refused (3);
//   - a failure says "turnstile: <what>" on stderr, and a usage error names
//     what is wrong (a flag, a variable, an argument or the workspace id);
//   - bad input never reaches the network: a usage error made no
//     connection, a command that connected had a valid workspace id, and
//     every exit 1 comes from a connection that was refused;
//   - nothing is published: the only address any command can reach is a
//     trap that accepts TCP connections and closes them at once.
//
// The seam: the tree is built by rootCmd as run builds it, then every
// command that would reach a server is confined to the trap (its
// connection flags are overwritten after parsing, so a fuzzed --nats-url or
// --database-url cannot point elsewhere), serve runs its own flag checks
// without starting anything, and agent does not run.
func FuzzCLI(f *testing.F) {
	for _, s := range []struct{ args, env string }{
		{"", ""},
		{"--help", ""},
		{"version\x00-o\x00json", ""},
		{"version", "OUTPUT=yaml"},
		{"create\x00demo\x00--env\x00AGENT_START_DELAY=5s", ""},
		{"create\x00demo\x00--cpus\x00-1", ""},
		{"create\x00demo\x00--memory\x00lots", ""},
		{"create\x00demo\x00--memory\x001k", ""},
		{"create\x00demo\x00--env\x00NOPE", ""},
		{"create\x00demo\x00--label\x00turnstile.x=1", ""},
		{"create\x00Bad.ID", ""},
		{"create", ""},
		{"create\x00a\x00b", ""},
		{"create\x00demo\x00--command-id\x00has space", ""},
		{"restart\x00demo\x00--wait\x00--timeout\x00soon", ""},
		{"stop\x00demo\x00--timeout=-1s", ""},
		{"delete\x00demo\x00--nats-url\x00nats://127.0.0.1:4222", ""},
		{"configure\x00demo", ""},
		{"configure\x00demo\x00--replace\x00--image\x00a b", ""},
		{"wait\x00demo\x00--state\x00sleeping", ""},
		{"wait\x00demo\x00--generation\x00-1", ""},
		{"get\x00", ""},
		{"list\x00--limit\x00-1", ""},
		{"list\x00--page-size\x000", ""},
		{"list\x00--watch", ""},
		{"history\x00demo\x00--follow", ""},
		{"get\x00demo\x00-o\x00yaml", ""},
		{"list\x00--status\x00none", ""},
		{"history\x00demo", "DATABASE_URL=postgres://elsewhere/db"},
		{"audit\x00--all\x00demo", ""},
		{"audit\x00demo\x00--at\x00yesterday", ""},
		{"audit\x00Bad.ID", ""},
		{"audit\x00--all\x00--at\x003", ""},
		{"serve", "SIM_MAX_LATENCY=soon"},
		{"serve\x00--provisioner\x00k8s", ""},
		{"serve\x00--sim-failure-rate\x00NaN", ""},
		{"serve\x00--deadline-stopping\x000s", ""},
		{"serve\x00--installation\x00Bad Install", ""},
		{"serve\x00--api-token\x00short", ""},
		{"serve\x00--api-token\x00Bad Name:0123456789abcdefghijklmnopqrstuvwxyz", ""},
		{"serve", "API_TOKEN=s3cret"},
		{"serve\x00--tls-cert\x00cert.pem", ""},
		{"serve\x00--http-max-waits\x000", ""},
		{"token", ""},
		{"token\x00--name\x00Bad Name", ""},
		{"serve\x00--allowed-images\x00registry/[a", ""},
		{"serve\x00--allowed-profiles\x00privileged", ""},
		{"serve\x00--default-memory\x00lots", ""},
		{"serve\x00--max-cpus\x001", "DEFAULT_CPUS=2"},
		{"migrate", ""},
		{"migrate\x00up\x00extra", ""},
		{"rebuild\x00-o\x00xml", ""},
		{"agent\x00--anything", ""},
		{"help\x00serve", ""},
		{"completion\x00bash", ""},
		{"__complete\x00create\x00--", ""},
		{"frobnicate", ""},
		{"-x", ""},
		{"---bad", ""},
		{"create\x00demo\x00-o", ""},
		{"list", "OUTPUT=json\nLOG_LEVEL=loud"},
	} {
		f.Add(s.args, s.env)
	}
	f.Fuzz(func(t *testing.T, argv, environ string) {
		args := []string{}
		if argv != "" {
			args = strings.Split(argv, "\x00")
		}
		runConfined(t, args, fuzzEnv(environ)).check(t)
	})
}

// fuzzEnv reads "KEY=VALUE" lines; a key without the TURNSTILE_ prefix
// gets it (USER excepted), so that short keys reach the flags.
func fuzzEnv(s string) map[string]string {
	env := map[string]string{}
	for line := range strings.SplitSeq(s, "\n") {
		k, v, ok := strings.Cut(line, "=")
		if !ok || k == "" {
			continue
		}
		if k != "USER" && !strings.HasPrefix(k, "TURNSTILE_") {
			k = "TURNSTILE_" + strings.ToUpper(k)
		}
		env[k] = v
	}
	return env
}

// trap stands in for NATS and PostgreSQL: it accepts TCP connections on
// loopback and closes them at once, so any client fails before it can say
// anything, and counts them. Each run has its own: pgx sometimes makes a
// second attempt just after a failed Ping has returned, which must not be
// counted against the next run.
type trap struct {
	ln    net.Listener
	conns atomic.Int64
	wg    sync.WaitGroup
}

func newTrap(tb testing.TB) *trap {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tr := &trap{ln: ln}
	tr.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			tr.conns.Add(1)
			_ = c.Close()
		}
	})
	return tr
}

// close stops the trap and returns how many connections it saw.
func (tr *trap) close() int64 {
	_ = tr.ln.Close()
	tr.wg.Wait()
	return tr.conns.Load()
}

// confine points every connection of a at the trap, whatever the command
// line said.
func (tr *trap) confine(a *app) {
	addr := tr.ln.Addr().String()
	a.natsURL = "nats://" + addr
	a.natsCreds, a.natsNkey, a.natsUser, a.natsPassword, a.natsToken = "", "", "", "", ""
	a.natsTLSCert, a.natsTLSKey, a.natsTLSCA = "", "", ""
	a.databaseURL = "postgres://fuzz@" + addr + "/fuzz?sslmode=disable&connect_timeout=5"
	a.apiURL, a.apiToken = "", "" // the direct path, to the trap
}

// cliResult is one confined run.
type cliResult struct {
	args     []string
	env      map[string]string
	code     int
	out, err string
	// ran is the path of the command whose RunE ran ("" if none did) and
	// its arguments; connected is whether the trap saw a connection.
	ran       string
	ranArgs   []string
	connected bool
}

// runConfined is run (app.go) with the tree confined: the same app, tree,
// exit code and error printing, but no command can reach anything but a
// trap.
func runConfined(t *testing.T, args []string, env map[string]string) cliResult {
	t.Helper()
	tr := newTrap(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out, errb bytes.Buffer
	a := &app{streams: streams{in: strings.NewReader(""), out: &out, err: &errb}, getenv: func(k string) string { return env[k] }}
	root := a.rootCmd()
	res := cliResult{args: args, env: env}
	confineTree(t, root, a, tr, &res)

	root.SetArgs(args)
	root.SetIn(a.in)
	root.SetOut(a.out)
	root.SetErr(a.err)
	res.code = a.exit(root.ExecuteContext(ctx))
	res.out, res.err = out.String(), errb.String()
	res.connected = tr.close() > 0
	return res
}

// confineTree replaces the RunE of every command of the tree: serve only
// checks its flags, agent does nothing, version runs as it is, and every
// other command runs as it is, confined to the trap.
func confineTree(t *testing.T, c *cobra.Command, a *app, tr *trap, res *cliResult) {
	for _, sub := range c.Commands() {
		confineTree(t, sub, a, tr, res)
	}
	if c.RunE == nil {
		return
	}
	orig := c.RunE
	path := c.CommandPath()
	record := func(args []string) { res.ran, res.ranArgs = path, args }
	switch path {
	case "turnstile serve":
		c.RunE = func(cmd *cobra.Command, args []string) error {
			record(args)
			cfg, err := serveConfigOf(cmd.Flags())
			if err != nil {
				t.Fatalf("serve's flags changed; update serveConfigOf: %v", err)
			}
			if err := cfg.validate(); err != nil {
				return usageError(err)
			}
			return nil
		}
	case "turnstile agent":
		c.RunE = func(_ *cobra.Command, args []string) error { record(args); return nil }
	case "turnstile version":
		c.RunE = func(cmd *cobra.Command, args []string) error { record(args); return orig(cmd, args) }
	default:
		c.RunE = func(cmd *cobra.Command, args []string) error {
			record(args)
			tr.confine(a)
			return orig(cmd, args)
		}
	}
}

// serveConfigOf reads serve's parsed flags into a serveConfig, as serve's
// own RunE sees them.
func serveConfigOf(fs *pflag.FlagSet) (serveConfig, error) {
	var c serveConfig
	var errs []error
	str := func(n string) string { v, err := fs.GetString(n); errs = append(errs, err); return v }
	dur := func(n string) time.Duration { v, err := fs.GetDuration(n); errs = append(errs, err); return v }
	c.natsListen, c.natsSync = str("nats-listen"), str("nats-sync")
	port, err := fs.GetInt("postgres-port")
	errs = append(errs, err)
	c.postgresPort = port
	c.postgresBinDir, c.httpAddr = str("postgres-bin-dir"), str("http-addr")
	tokens, err := fs.GetStringArray("api-token")
	errs = append(errs, err)
	c.apiTokens = tokens
	c.apiTokenFile, c.tlsCert, c.tlsKey = str("api-token-file"), str("tls-cert"), str("tls-key")
	c.httpReadTimeout = dur("http-read-timeout")
	maxWaits, err := fs.GetInt("http-max-waits")
	errs = append(errs, err)
	c.httpMaxWaits = maxWaits
	c.provisioner, c.installation, c.defaultImage = str("provisioner"), str("installation"), str("default-image")
	c.simMinLatency, c.simMaxLatency = dur("sim-min-latency"), dur("sim-max-latency")
	rate, err := fs.GetFloat64("sim-failure-rate")
	errs = append(errs, err)
	c.simFailureRate = rate
	seed, err := fs.GetUint64("sim-seed")
	errs = append(errs, err)
	c.simSeed = seed
	c.deadlineProvisioning, c.deadlineStopping, c.deadlineDelete = dur("deadline-provisioning"), dur("deadline-stopping"), dur("deadline-deleting")
	c.shutdownTimeout = dur("shutdown-timeout")
	maxActions, err := fs.GetInt("max-actions")
	errs = append(errs, err)
	c.maxActions = maxActions
	slice := func(n string) []string { v, err := fs.GetStringSlice(n); errs = append(errs, err); return v }
	num := func(n string) float64 { v, err := fs.GetFloat64(n); errs = append(errs, err); return v }
	c.allowedImages, c.allowedProfiles, c.defaultProfile = slice("allowed-images"), slice("allowed-profiles"), str("default-profile")
	c.defaultMemory, c.maxMemory, c.tmpSize = str("default-memory"), str("max-memory"), str("tmp-size")
	c.defaultCPUs, c.maxCPUs = num("default-cpus"), num("max-cpus")
	pids, err := fs.GetInt64("pids-limit")
	errs = append(errs, err)
	c.pidsLimit = pids
	return c, errors.Join(errs...)
}

// idCommands take a workspace id as their one argument.
var idCommands = map[string]bool{
	"turnstile create": true, "turnstile start": true, "turnstile stop": true, "turnstile restart": true,
	"turnstile delete": true, "turnstile configure": true, "turnstile get": true, "turnstile history": true,
	"turnstile wait": true, "turnstile audit": true,
}

// namesCulprit matches what a usage error must name: a flag, a variable,
// an argument, the workspace id, a spec field (spec.cpus) or a command.
var namesCulprit = regexp.MustCompile(`--[a-z]|'.' in -|TURNSTILE_[A-Z_]+|argument|workspace id|workspace ID|command|spec\.[a-z_]+|turnstile [a-z]+ [a-z]+`)

func (r cliResult) check(t *testing.T) {
	t.Helper()
	desc := func() string {
		return fmt.Sprintf("turnstile %q (env %q): exit %d, ran %q %q, connected %v\nstdout: %.500s\nstderr: %s",
			r.args, r.env, r.code, r.ran, r.ranArgs, r.connected, r.out, r.err)
	}
	switch r.code {
	case exitOK, exitError, exitUsage:
	default:
		t.Fatalf("exit code %d without a server: %s", r.code, desc())
	}
	if r.code != exitOK {
		msg, ok := strings.CutPrefix(r.err, "turnstile: ")
		if !ok || strings.TrimSpace(msg) == "" {
			t.Fatalf("a failure without 'turnstile: <reason>' on stderr: %s", desc())
		}
	}
	if r.code == exitUsage {
		if r.connected {
			t.Fatalf("a usage error after connecting: %s", desc())
		}
		if !namesCulprit.MatchString(r.err) && !quotesAnArg(r.err, r.args) {
			t.Fatalf("a usage error that names nothing: %s", desc())
		}
	}
	if r.code == exitError && !r.connected {
		t.Fatalf("exit 1 without a connection: bad input reported as a failure: %s", desc())
	}
	if r.connected && idCommands[r.ran] && len(r.ranArgs) == 1 {
		if err := fsm.ValidateID(r.ranArgs[0]); err != nil {
			t.Fatalf("connected with an invalid workspace id (%v): %s", err, desc())
		}
	}
	if r.code == exitOK && r.connected {
		t.Fatalf("succeeded against the trap: %s", desc())
	}
}

// quotesAnArg reports whether msg quotes one of args, as cobra's "unknown
// command" does.
func quotesAnArg(msg string, args []string) bool {
	for _, a := range args {
		if a != "" && strings.Contains(msg, fmt.Sprintf("%q", a)) {
			return true
		}
	}
	return false
}
