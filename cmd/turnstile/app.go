package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/turnstile-dev/turnstile/internal/termsafe"
)

// streams are the process's standard streams.
type streams struct {
	in       io.Reader
	out, err io.Writer
}

// app is one run of the CLI: its streams, its environment and the flags
// every command shares. main builds one per process; tests build their own.
type app struct {
	streams
	getenv func(string) string

	// Connection flags.
	natsURL, natsCreds, natsNkey, natsUser, natsPassword, natsToken string
	natsTLSCert, natsTLSKey, natsTLSCA                              string
	databaseURL, dataDir, prefix                                    string
	apiURL, apiToken, apiTLSCA                                      string
	output, logLevel, logFormat                                     string

	// started is set once a command's own code runs: errors before it are
	// usage errors from parsing the command line.
	started bool
	// fromEnv are the flags their TURNSTILE_* variables set, by name.
	fromEnv map[string]envSetting
}

// run executes the command line args and returns the exit code.
func run(ctx context.Context, args []string, s streams, getenv func(string) string) int {
	a := &app{streams: s, getenv: getenv}
	root := a.rootCmd()
	root.SetArgs(args)
	root.SetIn(s.in)
	root.SetOut(s.out)
	root.SetErr(s.err)
	return a.exit(root.ExecuteContext(ctx))
}

// exit is the exit code of a command that ended with err, which it
// prints; a bad value a variable gave is reported under the variable's
// name.
func (a *app) exit(err error) int {
	code := codeOf(err, a.started)
	var ee *codedError
	if err != nil && !(errors.As(err, &ee) && ee.quiet) {
		if code == exitUsage {
			err = namedByVariables(err, a.fromEnv)
		}
		fmt.Fprintln(a.err, "turnstile:", printableLines(err.Error()))
		if code == exitUsage && !a.started {
			fmt.Fprintln(a.err, "Run 'turnstile --help' for usage.")
		}
	}
	return code
}

// printableLines is printable for each line of s: an error keeps the
// line breaks it was written with, but text quoted in it from outside (a
// server's status line, a NATS -ERR, a container's reason) cannot act on
// the terminal. A program on serve's port chooses that text before the
// CLI knows it is no serve.
func printableLines(s string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = printable(l)
	}
	return strings.Join(lines, "\n")
}

func (a *app) rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "turnstile",
		Short: "Lifecycle controller for container workspaces",
		Long: `Turnstile runs the lifecycle of container workspaces as an event-sourced state
machine on NATS JetStream: one command per workspace at a time, illegal
transitions refused with a reason, every attempt numbered by a generation,
and every change kept as an event you can replay and audit.

Start everything on this machine with 'turnstile serve', then use the other
commands from another terminal.`,
		SilenceErrors: true,
		SilenceUsage:  true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			fromEnv, err := bindEnv(cmd, a.getenv)
			a.fromEnv = fromEnv
			if err != nil {
				return err
			}
			switch a.output {
			case "table", "json", "yaml":
			default:
				return fmt.Errorf("--output %q: use table, json or yaml", a.output)
			}
			a.started = true
			return nil
		},
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError(err) })
	pf := root.PersistentFlags()
	pf.StringVar(&a.natsURL, "nats-url", "", "NATS server URL, or a cluster's URLs comma-separated (client commands: default the URL serve wrote to <data-dir>/nats-url, else "+defaultNATSURL+"; serve: empty starts an embedded server)")
	pf.StringVar(&a.natsCreds, "nats-creds", "", "NATS credentials file (JWT and nkey seed)")
	pf.StringVar(&a.natsNkey, "nats-nkey", "", "NATS nkey seed file")
	pf.StringVar(&a.natsUser, "nats-user", "", "NATS user name")
	pf.StringVar(&a.natsPassword, "nats-password", "", "NATS password")
	pf.StringVar(&a.natsToken, "nats-token", "", "NATS authentication token (client commands: default none, they sign in with the nkey serve wrote to <data-dir>/nats-nkey, which never leaves this machine; serve: the user role's token of its embedded NATS instead of a generated one, needed to listen beyond loopback)")
	pf.StringVar(&a.natsTLSCert, "nats-tls-cert", "", "client certificate file for NATS over TLS")
	pf.StringVar(&a.natsTLSKey, "nats-tls-key", "", "client key file for NATS over TLS")
	pf.StringVar(&a.natsTLSCA, "nats-tls-ca", "", "CA certificate file to verify the NATS server")
	pf.StringVar(&a.databaseURL, "database-url", "", "PostgreSQL URL of the read model (client commands: default the URL serve wrote to <data-dir>/database-url; serve: empty starts a local PostgreSQL)")
	pf.StringVar(&a.dataDir, "data-dir", "./.turnstile", "directory for serve's state: JetStream store, local PostgreSQL, database-url, database-owner-url, api-url, api-token, nats-url, nats-nkey, nats-admin-nkey, nats-token and installation files")
	pf.StringVar(&a.prefix, "prefix", "turnstile", "NATS subject prefix and stream name prefix, so installations can share an account")
	pf.StringVar(&a.apiURL, "api-url", "", "URL of serve's HTTP API: client commands go through it alone, with --api-token (default: the api-url serve wrote to <data-dir>, unless --nats-url or --database-url is given)")
	pf.StringVar(&a.apiToken, "api-token", "", "client commands: the HTTP API's bearer token, SECRET or NAME:SECRET (default: the one serve wrote to <data-dir>/api-token); serve: the tokens it accepts (see serve --help)")
	pf.StringVar(&a.apiTLSCA, "api-tls-ca", "", "client commands: CA certificate file (PEM) to verify an https --api-url, besides the system's")
	pf.StringVarP(&a.output, "output", "o", "table", "output format: table, json or yaml")
	pf.StringVar(&a.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	pf.StringVar(&a.logFormat, "log-format", "auto", "log format: auto (text on a terminal, JSON otherwise), text or json")
	for _, name := range []string{"nats-url", "nats-creds", "nats-nkey", "nats-user", "nats-password", "nats-token",
		"nats-tls-cert", "nats-tls-key", "nats-tls-ca", "database-url", "api-url", "api-token", "api-tls-ca", "data-dir", "prefix", "output", "log-level", "log-format"} {
		markEnv(pf, name)
	}
	root.AddGroup(&cobra.Group{ID: "lifecycle", Title: "Lifecycle commands:"},
		&cobra.Group{ID: "query", Title: "Queries, history and audits:"},
		&cobra.Group{ID: "admin", Title: "Running Turnstile:"})
	root.SetHelpCommandGroupID("admin")
	root.SetCompletionCommandGroupID("admin")
	for _, c := range a.lifecycleCmds() {
		c.GroupID = "lifecycle"
		root.AddCommand(c)
	}
	for _, c := range []*cobra.Command{a.waitCmd(), a.getCmd(), a.listCmd(), a.historyCmd(), a.explainCmd(), a.auditCmd(), a.statusCmd()} {
		c.GroupID = "query"
		root.AddCommand(c)
	}
	for _, c := range []*cobra.Command{a.serveCmd(), a.secretCmd(), a.rebuildCmd(), a.migrateCmd(), a.tokenCmd(), a.webhookCmd(), a.versionCmd(), a.agentCmd()} {
		c.GroupID = "admin"
		root.AddCommand(c)
	}
	return root
}

// logger builds the slog logger the flags ask for, writing to stderr.
// Durations are logged as strings such as "1.2s": the JSON handler would
// write nanoseconds as a bare number, which reads as anything. The JSON
// handler writes through termsafe.Writer: it escapes C0 only, and logged
// values carry containers' text (exit and failure reasons) to whoever
// tails the log on a terminal; the text handler quotes them itself.
func (a *app) logger() (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(a.logLevel)); err != nil {
		return nil, usageError(fmt.Errorf("--log-level %q: use debug, info, warn or error", a.logLevel))
	}
	opts := &slog.HandlerOptions{Level: level, ReplaceAttr: durationAsString}
	switch a.logFormat {
	case "text":
		return slog.New(slog.NewTextHandler(a.err, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(termsafe.Writer(a.err), opts)), nil
	case "auto":
		if a.isTerminal(a.err) {
			return slog.New(slog.NewTextHandler(a.err, opts)), nil
		}
		return slog.New(slog.NewJSONHandler(termsafe.Writer(a.err), opts)), nil
	}
	return nil, usageError(fmt.Errorf("--log-format %q: use auto, text or json", a.logFormat))
}

// durationAsString is the loggers' ReplaceAttr: a time.Duration becomes its
// String ("1.5s"), in groups too.
func durationAsString(_ []string, attr slog.Attr) slog.Attr {
	if attr.Value.Kind() == slog.KindDuration {
		return slog.String(attr.Key, attr.Value.Duration().String())
	}
	return attr
}

// isTerminal reports whether w is a terminal.
func (a *app) isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// exactArgs is cobra.ExactArgs whose error is a usage error naming what is missing.
func exactArgs(names ...string) cobra.PositionalArgs {
	return func(_ *cobra.Command, args []string) error {
		if len(args) != len(names) {
			return usageError(fmt.Errorf("want %d argument(s) (%s), got %d", len(names), strings.Join(names, " "), len(args)))
		}
		return nil
	}
}
