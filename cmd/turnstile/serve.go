package main

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/docker/go-units"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/turnstile-dev/turnstile/api"
	"github.com/turnstile-dev/turnstile/engine"
	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/provisioner"
	"github.com/turnstile-dev/turnstile/provisioner/worker"
)

// serveConfig is everything serve is told by flags and variables.
type serveConfig struct {
	natsListen, natsSync             string
	replicas                         int
	partitions                       int
	postgresPort                     int
	postgresBinDir                   string
	httpAddr                         string
	apiTokens                        []string // SECRET or NAME:SECRET each
	apiTokenFile                     string
	tlsCert, tlsKey                  string
	httpReadTimeout                  time.Duration
	httpMaxWaits                     int
	provisioner, installation        string
	defaultImage                     string
	allowedImages, allowedProfiles   []string
	defaultProfile                   string
	defaultMemory, maxMemory         string
	defaultCPUs, maxCPUs             float64
	pidsLimit                        int64
	tmpSize                          string
	simMinLatency, simMaxLatency     time.Duration
	simFailureRate                   float64
	simSeed                          uint64
	deadlineProvisioning             time.Duration
	deadlineStopping, deadlineDelete time.Duration
	maxActions                       int
	secretsDir                       string
	maxPendingPerWorkspace           int
	rejectedRetention                time.Duration
	webhookAllowPrivate              bool
	shutdownTimeout                  time.Duration
}

func (c *serveConfig) deadlines() map[fsm.Status]time.Duration {
	return map[fsm.Status]time.Duration{
		fsm.Provisioning: c.deadlineProvisioning,
		fsm.Stopping:     c.deadlineStopping,
		fsm.Deleting:     c.deadlineDelete,
	}
}

func (c *serveConfig) validate() error {
	switch c.natsSync {
	case "always", "default":
	default:
		return fmt.Errorf("--nats-sync %q: use always (fsync before every ack) or default (fsync every 2 minutes)", c.natsSync)
	}
	switch c.provisioner {
	case "auto", "docker", "sim":
	default:
		return fmt.Errorf("--provisioner %q: use auto, docker or sim", c.provisioner)
	}
	if c.installation != "" {
		if err := provisioner.ValidateInstallation(c.installation); err != nil {
			return fmt.Errorf("--installation: %w", err)
		}
	}
	switch c.replicas {
	case 0, 1, 3, 5:
	default:
		return fmt.Errorf("--replicas %d: use 1, 3 or 5 (a Raft group needs a majority: an even count survives no more faults than one less)", c.replicas)
	}
	if c.partitions != 0 {
		if err := events.ValidatePartitions(c.partitions); err != nil {
			return fmt.Errorf("--partitions: %w", err)
		}
	}
	if c.simMinLatency < 0 || c.simMaxLatency < c.simMinLatency {
		return fmt.Errorf("--sim-min-latency %v and --sim-max-latency %v: need 0 <= min <= max", c.simMinLatency, c.simMaxLatency)
	}
	if c.simFailureRate < 0 || c.simFailureRate > 1 {
		return fmt.Errorf("--sim-failure-rate %v: use a fraction from 0 to 1", c.simFailureRate)
	}
	if c.secretsDir != "" {
		fi, err := os.Stat(c.secretsDir)
		if err != nil {
			return fmt.Errorf("--secrets-dir: %w", err)
		}
		if !fi.IsDir() {
			return fmt.Errorf("--secrets-dir %q is not a directory", c.secretsDir)
		}
	}
	if _, err := c.policy(); err != nil {
		return err
	}
	// Every stop runs under this timeout: with none left, PostgreSQL would
	// be killed at once (crash recovery at the next start) and nothing
	// could drain.
	if c.shutdownTimeout <= 0 {
		return fmt.Errorf("--shutdown-timeout %v: use a positive duration, such as 30s", c.shutdownTimeout)
	}
	if c.maxActions < 1 {
		return fmt.Errorf("--max-actions %d: use a positive number", c.maxActions)
	}
	for _, t := range c.apiTokens {
		if _, err := api.ParseToken(t); err != nil {
			return fmt.Errorf("--api-token: %w", err)
		}
	}
	if (c.tlsCert == "") != (c.tlsKey == "") {
		return fmt.Errorf("--tls-cert %q and --tls-key %q: give both (TLS) or neither (plain HTTP)", c.tlsCert, c.tlsKey)
	}
	if c.httpReadTimeout <= 0 {
		return fmt.Errorf("--http-read-timeout %v: use a positive duration", c.httpReadTimeout)
	}
	if c.httpMaxWaits < 1 {
		return fmt.Errorf("--http-max-waits %d: use a positive number", c.httpMaxWaits)
	}
	if c.maxPendingPerWorkspace < 1 {
		return fmt.Errorf("--max-pending-per-workspace %d: use a positive number", c.maxPendingPerWorkspace)
	}
	if c.rejectedRetention != 0 && c.rejectedRetention < time.Hour {
		return fmt.Errorf("--rejected-retention %v: use at least 1h, or 0 to keep them for ever", c.rejectedRetention)
	}
	for name, d := range map[string]time.Duration{"--deadline-provisioning": c.deadlineProvisioning,
		"--deadline-stopping": c.deadlineStopping, "--deadline-deleting": c.deadlineDelete} {
		if d <= 0 {
			return fmt.Errorf("%s %v: use a positive duration", name, d)
		}
	}
	return nil
}

func (a *app) serveCmd() *cobra.Command {
	var c serveConfig
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run Turnstile: embedded NATS, local PostgreSQL, engine, provisioner, projector and HTTP API",
		Long: `Run everything on this machine. With no flags: an embedded nats-server with
JetStream on 127.0.0.1:4222 (file store under --data-dir, fsync before every ack),
a local PostgreSQL started from the installed binaries under --data-dir (its URL is
written to <data-dir>/database-url), the read model's migrations, the command
engine, the provisioner (Docker when reachable, else the simulator), its worker,
deadline sweeper, reconciler and event watcher, the projector, and the HTTP API
on 127.0.0.1:8080, which requires a bearer token: --api-token, or one generated
into <data-dir>/api-token on first start (curl -H "Authorization: Bearer $(cat
.turnstile/api-token)" ...). --nats-url and --database-url use existing servers
instead.
SIGINT or SIGTERM stops it cleanly.`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := c.validate(); err != nil {
				return usageError(err)
			}
			// Before anything starts: an embedded server would take its
			// port first, and a taken port would hide this error.
			if c.replicas > 1 && a.natsURL == "" {
				return usageError(fmt.Errorf("--replicas %d: the embedded NATS is one server; replicas need --nats-url to a NATS cluster of at least %d servers (docs/scale-out.md)", c.replicas, c.replicas))
			}
			return a.serve(cmd.Context(), c)
		},
	}
	f := cmd.Flags()
	f.StringVar(&c.natsListen, "nats-listen", "127.0.0.1:4222", "address of the embedded NATS server (without --nats-url)")
	f.StringVar(&c.natsSync, "nats-sync", "always", "embedded NATS fsync policy: always (before every ack; survives power loss) or default (every 2 minutes; faster)")
	f.IntVar(&c.replicas, "replicas", 0, "replicas of every stream serve creates, 1, 3 or 5, updated in place at start; more than 1 needs --nats-url to a NATS cluster of at least that many JetStream servers (default: 1 on the embedded server; on --nats-url what the streams have, 1 for new ones)")
	f.IntVar(&c.partitions, "partitions", 0, fmt.Sprintf("command partitions P, each handled by one engine at a time across serves; fixed when the streams are created (default: the streams' P; %d for new ones; at most %d)", events.DefaultPartitions, events.MaxPartitions))
	f.IntVar(&c.postgresPort, "postgres-port", 0, "port of the local PostgreSQL (without --database-url); 0 picks a free one")
	f.StringVar(&c.postgresBinDir, "postgres-bin-dir", "", "directory with initdb and postgres (default: search /usr/lib/postgresql/{15,16,17}/bin, /usr/local/pgsql/bin)")
	f.StringVar(&c.httpAddr, "http-addr", "127.0.0.1:8080", "address of the HTTP API")
	f.StringArrayVar(&c.apiTokens, "api-token", nil, "bearer token of the HTTP API, SECRET or NAME:SECRET (commands are recorded as by api:NAME; NAME default \"default\"); repeatable; at least 32 characters (turnstile token makes one). Default: one generated once and kept in <data-dir>/api-token")
	f.StringVar(&c.apiTokenFile, "api-token-file", "", "file of HTTP API tokens, one NAME:SECRET (or SECRET) a line, # comments; mode 0600; read at start")
	f.StringVar(&c.tlsCert, "tls-cert", "", "certificate file (PEM, chain included) to serve the HTTP API over TLS, with --tls-key; reread when it changes")
	f.StringVar(&c.tlsKey, "tls-key", "", "private key file (PEM) of --tls-cert")
	f.DurationVar(&c.httpReadTimeout, "http-read-timeout", 30*time.Second, "how long a request's body may take to arrive; a slower one is cut off")
	f.IntVar(&c.httpMaxWaits, "http-max-waits", api.DefaultMaxWaits, "GET .../wait requests, follow=1 event streams and GET /v1/audit requests open at once, together; beyond, they are answered 429 too_many_waits with Retry-After")
	f.StringVar(&c.provisioner, "provisioner", "auto", "provisioner: docker, sim (a SIMULATOR: no containers run) or auto (docker when reachable, else sim)")
	f.StringVar(&c.installation, "installation", "", "installation id labelled on every container (default: generated once and kept in <data-dir>/installation)")
	f.StringVar(&c.defaultImage, "default-image", "", "image of workspaces created without --image (docker default: turnstile-agent built locally from this binary)")
	f.StringSliceVar(&c.allowedImages, "allowed-images", nil, "patterns (path.Match: * stays within one /-separated part) of the images a spec may name besides the default image, which is always allowed; comma-separated or repeated (default: none)")
	f.StringSliceVar(&c.allowedProfiles, "allowed-profiles", nil, "security profiles a spec may ask for: restricted, standard (default: the default profile only)")
	f.StringVar(&c.defaultProfile, "default-profile", provisioner.ProfileRestricted, "security profile of a spec that names none: restricted (no capabilities, read-only root filesystem, non-root) or standard")
	f.StringVar(&c.defaultMemory, "default-memory", "512m", "memory limit of a spec that sets none, such as 512m or 2g (0: no limit)")
	f.Float64Var(&c.defaultCPUs, "default-cpus", provisioner.DefaultCPUs, "CPU limit of a spec that sets none (0: no limit)")
	f.StringVar(&c.maxMemory, "max-memory", defaultMaxMemory, "the largest memory limit a spec may ask for; --default-memory must be within it (0: no maximum: one spec may then take all the host's memory)")
	f.Float64Var(&c.maxCPUs, "max-cpus", defaultMaxCPUs(), "the largest CPU limit a spec may ask for; --default-cpus must be within it (this host's CPUs unless given; 0: no maximum)")
	f.Int64Var(&c.pidsLimit, "pids-limit", provisioner.DefaultPidsLimit, "most processes and threads in one workspace container (0: no limit)")
	f.StringVar(&c.tmpSize, "tmp-size", "64m", "size of the tmpfs /tmp of a container with a read-only root filesystem (restricted), and of each tmpfs at a path its image declares a VOLUME; it counts against the memory limit")
	f.DurationVar(&c.simMinLatency, "sim-min-latency", 100*time.Millisecond, "sim: shortest simulated provision, stop and delete")
	f.DurationVar(&c.simMaxLatency, "sim-max-latency", 500*time.Millisecond, "sim: longest simulated provision, stop and delete")
	f.Float64Var(&c.simFailureRate, "sim-failure-rate", 0, "sim: fraction of provisions that fail")
	f.Uint64Var(&c.simSeed, "sim-seed", 1, "sim: seed of the simulated latencies and failures")
	f.DurationVar(&c.deadlineProvisioning, "deadline-provisioning", 10*time.Minute, "a workspace provisioning longer fails with a reason naming this deadline")
	f.DurationVar(&c.deadlineStopping, "deadline-stopping", 5*time.Minute, "a workspace stopping longer fails")
	f.DurationVar(&c.deadlineDelete, "deadline-deleting", 5*time.Minute, "a workspace deleting longer fails")
	f.IntVar(&c.maxActions, "max-actions", worker.DefaultMaxConcurrentActions, "provisioner actions (provision, stop, delete) run at once over all workspaces; more wait for a slot")
	f.StringVar(&c.secretsDir, "secrets-dir", "", "directory of secrets the operator provides, one file per secret named as the secret (Docker or Kubernetes secret mounts), read after <data-dir>/secrets for secret://NAME env values")
	f.IntVar(&c.maxPendingPerWorkspace, "max-pending-per-workspace", engine.DefaultMaxPendingPerWorkspace, "commands queued for one workspace at most; a user command delivered for the first time beyond it is refused busy at once, undecided, so one workspace's flood cannot hold up the others (one that may have been decided already is queued)")
	f.DurationVar(&c.rejectedRetention, "rejected-retention", events.DefaultRejectedRetention, "how long outcomes that wrote no event (rejected, no-op, stale) are kept in JetStream; commands are kept no longer; 0 keeps them for ever")
	f.BoolVar(&c.webhookAllowPrivate, "webhook-allow-private", false, "let webhooks call loopback, private and link-local addresses (receivers on this host or network); by default serve refuses them at add and at every dial")
	f.DurationVar(&c.shutdownTimeout, "shutdown-timeout", 30*time.Second, "how long a shutdown may take before it gives up waiting")
	f.VisitAll(func(fl *pflag.Flag) { markEnv(f, fl.Name) })
	return cmd
}

// defaultMaxMemory is --max-memory unless given: callers of the API and
// NATS are not trusted, and Docker takes any memory limit (1000g runs),
// so without a maximum one spec could take the host's memory.
const defaultMaxMemory = "4g"

// defaultMaxCPUs is --max-cpus unless given: this host's CPUs (those this
// process may run on). Docker refuses more only when it creates the
// container, after the command was taken; the policy says why at once.
func defaultMaxCPUs() float64 { return float64(min(runtime.NumCPU(), fsm.MaxCPUs)) }

// policy is the provisioner policy the flags describe. A 0 default (no
// limit) is a negative number to provisioner.Policy, whose zero fields
// are its own defaults.
func (c *serveConfig) policy() (provisioner.Policy, error) {
	size := func(flag, v string) (int64, error) {
		if v == "" || v == "0" {
			return 0, nil
		}
		n, err := units.RAMInBytes(v)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("--%s %q: use a size such as 512m or 2g, or 0", flag, v)
		}
		return n, nil
	}
	orNone := func(n int64) int64 {
		if n == 0 {
			return -1
		}
		return n
	}
	p := provisioner.Policy{AllowedImages: nonEmpty(c.allowedImages), AllowedProfiles: nonEmpty(c.allowedProfiles),
		DefaultProfile: c.defaultProfile, MaxCPUs: c.maxCPUs, PidsLimit: orNone(c.pidsLimit)}
	var err error
	if p.DefaultMemoryBytes, err = size("default-memory", c.defaultMemory); err != nil {
		return p, err
	}
	if p.MaxMemoryBytes, err = size("max-memory", c.maxMemory); err != nil {
		return p, err
	}
	if p.TmpBytes, err = size("tmp-size", c.tmpSize); err != nil {
		return p, err
	}
	p.DefaultMemoryBytes = orNone(p.DefaultMemoryBytes)
	if c.defaultCPUs < 0 || c.maxCPUs < 0 || c.pidsLimit < 0 {
		return p, fmt.Errorf("--default-cpus %v, --max-cpus %v, --pids-limit %d: use 0 (none) or a positive number", c.defaultCPUs, c.maxCPUs, c.pidsLimit)
	}
	p.DefaultCPUs = c.defaultCPUs
	if p.DefaultCPUs == 0 {
		p.DefaultCPUs = -1
	}
	if p.TmpBytes == 0 {
		return p, fmt.Errorf("--tmp-size 0: /tmp needs a size (it is memory)")
	}
	// Validate refuses these too, but cannot name the flags; the maximums
	// have defaults, so an operator may meet this without having set one.
	noLimit := func(v string) string {
		if v == "" || v == "0" {
			return "0 (no limit)"
		}
		return v
	}
	if p.MaxMemoryBytes > 0 && (p.DefaultMemoryBytes < 0 || p.DefaultMemoryBytes > p.MaxMemoryBytes) {
		return p, fmt.Errorf("--default-memory %s is above --max-memory %s: lower --default-memory, raise --max-memory, or pass --max-memory 0 for no maximum",
			noLimit(c.defaultMemory), c.maxMemory)
	}
	if c.maxCPUs > 0 && (c.defaultCPUs == 0 || c.defaultCPUs > c.maxCPUs) {
		return p, fmt.Errorf("--default-cpus %s is above --max-cpus %v: lower --default-cpus, raise --max-cpus, or pass --max-cpus 0 for no maximum",
			noLimit(fmt.Sprint(c.defaultCPUs)), c.maxCPUs)
	}
	if err := p.Validate(); err != nil {
		return p, fmt.Errorf("provisioner policy (--allowed-images, --allowed-profiles, --default-*, --max-*): %w", err)
	}
	return p, nil
}

// nonEmpty drops empty entries (a trailing comma); nil when none is left.
func nonEmpty(list []string) []string {
	var out []string
	for _, v := range list {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}

// installationID is --installation, or the id kept in the data dir,
// generated on first use.
func installationID(dataDir, flag string) (string, error) {
	if flag != "" {
		return flag, nil
	}
	path := filepath.Join(dataDir, "installation")
	b, err := os.ReadFile(path)
	if err == nil {
		id := strings.TrimSpace(string(b))
		if err := provisioner.ValidateInstallation(id); err != nil {
			return "", fmt.Errorf("%s: %w", path, err)
		}
		return id, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("read the installation id: %w", err)
	}
	raw := make([]byte, 4)
	if _, err := rand.Read(raw); err != nil {
		return "", err
	}
	id := "ts-" + hex.EncodeToString(raw)
	if err := os.WriteFile(path, []byte(id+"\n"), 0o644); err != nil {
		return "", fmt.Errorf("write the installation id: %w", err)
	}
	return id, nil
}
