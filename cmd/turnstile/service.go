package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/turnstile-dev/turnstile/api"
	"github.com/turnstile-dev/turnstile/client"
	"github.com/turnstile-dev/turnstile/engine"
	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/migrations"
	"github.com/turnstile-dev/turnstile/projector"
	"github.com/turnstile-dev/turnstile/secrets"
	"github.com/turnstile-dev/turnstile/webhook"
)

// service is everything serve runs. start brings the parts up in order;
// close takes them down in the reverse order: the HTTP API first (no new
// commands through it), then the engine (in-flight commands finish or are
// handed back), the provisioning side, the projector, the databases.
type service struct {
	a     *app
	cfg   serveConfig
	log   *slog.Logger
	names events.Names

	embedded     *embeddedNATS
	natsURL      string
	db           *database
	backend      *backend
	installation string
	httpURL      string
	apiTokens    apiTokenSource
	httpTLS      *apiCertificate // nil: plain HTTP
	httpLoopback bool
	replicas     int    // of every stream
	partitions   int    // P of the command streams
	actorKey     []byte // the installation's (loadActorKey): the engine's and the API client's

	// Wired by one part of start, used by later ones.
	life     context.Context // until close; see start
	ln       net.Listener    // the HTTP API's, taken early, served last
	served   bool            // the HTTP server owns ln
	conns    map[string]*nats.Conn
	pool     *pgxpool.Pool // the projector's (writer)
	readPool *pgxpool.Pool // the API's and metrics' (reader; pool if one role)
	reg      *prometheus.Registry
	hooks    *webhook.Registry // the webhooks' registry, which the API manages

	draining atomic.Bool
	fatal    chan error // a part that stopped on its own
	stack    []func(context.Context) error
}

// push registers how to undo the step just taken.
func (s *service) push(name string, fn func(context.Context) error) {
	s.stack = append(s.stack, func(ctx context.Context) error {
		if err := fn(ctx); err != nil {
			return fmt.Errorf("stop %s: %w", name, err)
		}
		s.log.Debug("stopped", "part", name)
		return nil
	})
}

// close undoes every step, newest first, within ctx.
func (s *service) close(ctx context.Context) error {
	s.draining.Store(true)
	var errs []error
	for i := len(s.stack) - 1; i >= 0; i-- {
		if err := s.stack[i](ctx); err != nil {
			errs = append(errs, err)
		}
	}
	s.stack = nil
	return errors.Join(errs...)
}

// failed reports a part that stopped by itself; run ends with it.
func (s *service) failed(err error) {
	select {
	case s.fatal <- err:
	default:
	}
}

// startService brings everything up; on failure it stops what it started.
func (a *app) startService(ctx context.Context, cfg serveConfig, log *slog.Logger) (*service, error) {
	s := &service{a: a, cfg: cfg, log: log, names: events.NewNames(a.prefix), fatal: make(chan error, 1)}
	if err := s.start(ctx); err != nil {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.shutdownTimeout)
		defer cancel()
		if cerr := s.close(cctx); cerr != nil {
			log.Error("stopping after a failed start", "err", cerr)
		}
		return nil, err
	}
	return s, nil
}

// start brings the parts up in order, each by a method of its own, under
// ctx (which bounds the start only). What runs until close runs under
// s.life.
func (s *service) start(ctx context.Context) error {
	// The service's lifetime: not ended by the end of start's ctx; cancelled
	// by close, last (pushed first).
	life, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.life = life
	s.push("service lifetime", func(context.Context) error { cancel(); return nil })
	for _, part := range []func(context.Context) error{
		s.startDataDir,
		s.startListener,
		s.startNATS,
		s.startBackend,
		s.startDatabase,
		s.startProjector,
		s.startProvisioning,
		s.startEngine,
		s.startWebhooks,
		s.startAPI,
		s.watchPostgres,
	} {
		if err := part(ctx); err != nil {
			return err
		}
	}
	return nil
}

// startDataDir makes the data dir, takes it (lockDataDir) and reads what
// the API needs before anything listens: the API is never open, so its tokens and its
// certificate come first; then the installation id.
func (s *service) startDataDir(context.Context) error {
	cfg, log := s.cfg, s.log
	if err := os.MkdirAll(s.a.dataDir, 0o711); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	unlock, err := lockDataDir(s.a.dataDir)
	if err != nil {
		return err
	}
	s.push("data dir lock", func(context.Context) error { return unlock() })
	if s.apiTokens, err = loadAPITokens(s.a.dataDir, cfg); err != nil {
		return err
	}
	if cfg.tlsCert != "" {
		if s.httpTLS, err = newAPICertificate(cfg.tlsCert, cfg.tlsKey, log.With("component", "http")); err != nil {
			return usageError(err)
		}
	}
	return nil
}

// startListener takes the HTTP API's address (served by startAPI, last),
// so that a taken port fails the start before anything else runs.
func (s *service) startListener(context.Context) error {
	cfg, log := s.cfg, s.log
	ln, err := net.Listen("tcp", cfg.httpAddr)
	if err != nil {
		return portTaken("HTTP API", cfg.httpAddr, err, "--http-addr", "")
	}
	s.ln = ln
	scheme := "http://"
	if s.httpTLS != nil {
		scheme = "https://"
	}
	s.httpURL = scheme + ln.Addr().String()
	if ta, ok := ln.Addr().(*net.TCPAddr); ok {
		s.httpLoopback = ta.IP.IsLoopback()
	}
	if !s.httpLoopback && s.httpTLS == nil {
		log.Warn("the HTTP API listens beyond loopback without TLS: its bearer token crosses the network in clear text; "+
			"give --tls-cert and --tls-key, or put a TLS proxy in front", "addr", ln.Addr().String())
	}
	s.push("http listener", func(context.Context) error {
		if !s.served {
			return ln.Close()
		}
		return nil
	})
	if s.installation, err = installationID(s.a.dataDir, cfg.installation); err != nil {
		return err
	}
	return nil
}

// startNATS starts the embedded NATS unless --nats-url, opens one
// connection per part and makes sure the streams exist.
func (s *service) startNATS(ctx context.Context) error {
	cfg, log := s.cfg, s.log
	var err error
	connect := func(part string) (*nats.Conn, error) {
		name := "turnstile-serve-" + part
		if s.embedded != nil {
			return s.embedded.connect(name)
		}
		opts := append(s.a.natsOptions(name), nats.CustomInboxPrefix(serveInboxPrefix))
		// On the part, not the connection's name: compared with the
		// name, this held for no connection (found in review).
		if part == "commit" || part == "api" {
			// These writes fail while the connection is down rather than
			// wait in a buffer and land any time later. The engine's: an
			// event sent without the outcome check must land by its
			// deadline (engine/unseen.go), and the engine retries a failed
			// write. The API's commands: the engine takes their proof
			// (events.ActorProof) only within the duplicate window of when
			// they are stored, and one the caller was told had failed
			// would land after the outage, refused as forged under the
			// caller's Idempotency-Key.
			opts = append(opts, nats.ReconnectBufSize(-1))
		}
		nc, err := nats.Connect(s.natsURL, opts...)
		if err != nil {
			return nil, fmt.Errorf("cannot reach NATS at %s: %w", withoutUserinfo(s.natsURL), redactURLError(err))
		}
		return nc, nil
	}
	if s.a.natsURL == "" {
		userPerms, adminPerms := rolePermissions(s.names, serveDurables(s.names, s.installation))
		if s.embedded, err = startNATS(cfg.natsListen, cfg.natsSync, s.a.natsToken, s.a.dataDir, s.names, userPerms, adminPerms, log); err != nil {
			return err
		}
		s.natsURL = s.embedded.url()
		s.push("embedded NATS", func(context.Context) error { s.embedded.shutdown(); return nil })
	} else {
		s.natsURL = s.a.natsURL
	}
	if err := writeEndpoints(s.a.dataDir, s.httpURL, s.natsURL); err != nil {
		return err
	}
	s.conns = map[string]*nats.Conn{}
	for _, name := range []string{"engine", "commit", "api", "provisioning", "projector", "webhooks"} {
		nc, err := connect(name)
		if err != nil {
			return err
		}
		s.conns[name] = nc
		s.push("NATS connection "+name, func(context.Context) error {
			err := nc.Drain()
			if errors.Is(err, nats.ErrConnectionReconnecting) {
				// NATS is away (--nats-url): there is nothing to drain to.
				// What the connection still buffers goes with it, as it
				// would in the outage; the parts that wrote it stopped
				// before, and take up their work again at the next start.
				s.log.Warn("NATS is unreachable at stop: connection closed without a drain", "connection", name)
				nc.Close()
				return nil
			}
			return err
		})
	}
	js, err := jetstream.New(s.conns["engine"])
	if err != nil {
		return err
	}
	retention := cfg.rejectedRetention
	if retention == 0 {
		retention = -1 // for ever
	}
	if s.replicas, err = s.streamReplicas(ctx, js); err != nil {
		return err
	}
	if err := s.ensureStreams(ctx, js, events.StreamOptions{RejectedRetention: retention, Replicas: s.replicas,
		Partitions: cfg.partitions}); err != nil {
		return err
	}
	if s.partitions, err = events.ReadPartitions(ctx, js, s.names); err != nil {
		return err
	}
	return s.untilReady(ctx, "load the actor key", func(ctx context.Context) (err error) {
		s.actorKey, err = loadActorKey(ctx, js, s.names, s.replicas)
		return err
	})
}

// store opens the event store on the NATS connection of the part name.
func (s *service) store(ctx context.Context, name string) (*events.Store, error) {
	nc, ok := s.conns[name]
	if !ok {
		return nil, fmt.Errorf("no NATS connection named %q", name)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	return s.openStore(ctx, js)
}

// openStore opens the event store on js, while NATS gets ready.
func (s *service) openStore(ctx context.Context, js jetstream.JetStream) (store *events.Store, err error) {
	err = s.untilReady(ctx, "open the event stream", func(ctx context.Context) (err error) {
		store, err = events.OpenStore(ctx, js, s.names, events.Codec{})
		return err
	})
	return store, err
}

// newClient opens a client on nc, while NATS gets ready.
func (s *service) newClient(ctx context.Context, nc *nats.Conn, o client.Options) (cl *client.Client, err error) {
	err = s.untilReady(ctx, "open a client", func(ctx context.Context) (err error) {
		cl, err = client.New(ctx, nc, o)
		return err
	})
	return cl, err
}

// startDatabase opens PostgreSQL, applies the read model's schema and
// opens the pools, and makes the metrics registry (its workspace
// collector reads the read model).
func (s *service) startDatabase(ctx context.Context) error {
	cfg, log := s.cfg, s.log
	var err error
	if s.db, err = openDatabase(ctx, s.a.databaseURL, s.a.dataDir, cfg, log); err != nil {
		return err
	}
	s.push("PostgreSQL", s.db.close)
	// Migrations as the owner, on a connection of their own.
	if err := s.migrate(ctx); err != nil {
		return err
	}
	// The projector writes as the writer; the API and metrics read as the
	// reader. A given --database-url is one role: one pool, as before.
	shared := s.db.readerURL == s.db.writerURL
	if s.pool, err = s.openPool(ctx, s.db.writerURL, map[bool]int32{true: 8, false: 4}[shared]); err != nil {
		return err
	}
	s.readPool = s.pool
	if !shared {
		if s.readPool, err = s.openPool(ctx, s.db.readerURL, 4); err != nil {
			return err
		}
	}
	s.reg = prometheus.NewRegistry()
	s.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		api.NewWorkspaceCollector(s.readPool, log), buildInfo(readVersion()))
	return nil
}

// startProjector runs the projector until close.
func (s *service) startProjector(ctx context.Context) error {
	pjs, err := jetstream.New(s.conns["projector"])
	if err != nil {
		return err
	}
	pstore, err := s.openStore(ctx, pjs)
	if err != nil {
		return err
	}
	proj, err := projector.New(projector.Config{Store: pstore, Pool: s.pool,
		Logger: s.log.With("component", "projector"), Registerer: s.reg})
	if err != nil {
		return err
	}
	pctx, pcancel := context.WithCancel(s.life)
	var pwg sync.WaitGroup
	pwg.Go(func() { _ = proj.Run(pctx) })
	s.push("projector", func(context.Context) error { pcancel(); pwg.Wait(); return nil })
	return nil
}

// startBackend picks the provisioner. It first reads the live engines,
// before PostgreSQL or anything else of this serve starts: a serve of the
// installation on another Docker engine, or a simulator beside Docker,
// refuses this start (sameProvisioner).
func (s *service) startBackend(ctx context.Context) error {
	var err error
	if s.backend, err = chooseBackend(ctx, s.cfg, s.installation, s.a.dataDir, s.log, s.admitProvisioner); err != nil {
		return err
	}
	s.push("provisioner backend", func(context.Context) error { s.backend.closeFn(); return nil })
	return nil
}

// admitProvisioner refuses the container engine identity when a live
// engine of the installation announces another (sameProvisioner).
func (s *service) admitProvisioner(ctx context.Context, identity, hint string) error {
	js, err := jetstream.New(s.conns["engine"])
	if err != nil {
		return err
	}
	var members []engine.Member
	err = s.untilReady(ctx, "read the engines", func(ctx context.Context) (err error) {
		members, err = engine.ReadMembers(ctx, js, s.names, engineDurable)
		return err
	})
	if err != nil {
		return fmt.Errorf("read the live serves' container engines: %w", err)
	}
	return sameProvisioner(identity, hint, members)
}

// startProvisioning starts the provisioner's worker, supervisor and
// watcher.
func (s *service) startProvisioning(ctx context.Context) error {
	cfg, log := s.cfg, s.log
	provStore, err := s.store(ctx, "provisioning")
	if err != nil {
		return err
	}
	// The one client that may send system reports (to <prefix>.sys.<ws>).
	provClient, err := s.newClient(ctx, s.conns["provisioning"], client.Options{Prefix: s.a.prefix, Actor: "provisioner", System: true})
	if err != nil {
		return err
	}
	s.push("provisioning client", func(context.Context) error { return provClient.Close() })
	stopProv, err := startProvisioning(s.life, provisioningDeps{
		NC: s.conns["provisioning"], Store: provStore, Client: provClient, Provisioner: s.backend.prov,
		Installation: s.installation, Logger: log.With("component", "provisioning"), Registry: s.reg,
		Deadlines: cfg.deadlines(), MaxActions: cfg.maxActions, Secrets: s.secretResolver(),
	})
	if err != nil {
		return fmt.Errorf("provisioning: %w", err)
	}
	s.push("provisioning", func(context.Context) error { stopProv(); return nil })
	return nil
}

// startEngine starts the command engine.
func (s *service) startEngine(ctx context.Context) error {
	engStore, err := s.store(ctx, "engine")
	if err != nil {
		return err
	}
	commitStore, err := s.store(ctx, "commit") // DefaultCommitters: one
	if err != nil {
		return err
	}
	// Atomic batches pay off only where the server fsyncs every write
	// (engine.Config.AtomicBatchFrom); another server's policy is unknown,
	// so the default, right for sync_always, stays.
	atomicFrom := 0
	if s.embedded != nil && !s.embedded.sync {
		atomicFrom = -1
	}
	js, err := jetstream.New(s.conns["engine"])
	if err != nil {
		return err
	}
	eng, err := engine.New(engine.Config{Store: engStore, JetStream: js, CommitStores: []*events.Store{commitStore}, AtomicBatchFrom: atomicFrom,
		ReplyPrefixes: append(engine.DefaultReplyPrefixes(), serveReplyPrefix+"."),
		Logger:        s.log.With("component", "engine"), Metrics: engine.NewMetrics(s.reg), Name: engineName(),
		Provisioner: s.backend.identity, ProvisionerHint: s.backend.hint,
		MaxPendingPerWorkspace: s.cfg.maxPendingPerWorkspace, ActorKey: s.actorKey, AdmitSpec: s.backend.admitSpec})
	if err != nil {
		return err
	}
	// The engine's consumers live on ctx: not the try's.
	if err := s.untilReady(ctx, "start the engine", func(context.Context) error { return eng.Open(ctx) }); err != nil {
		return err
	}
	s.push("engine", func(context.Context) error { return eng.Close() })
	return nil
}

// startAPI serves the HTTP API on the listener startListener took.
func (s *service) startAPI(ctx context.Context) error {
	cfg, log := s.cfg, s.log
	apiStore, err := s.store(ctx, "api")
	if err != nil {
		return err
	}
	apiClient, err := s.newClient(ctx, s.conns["api"], client.Options{Prefix: s.a.prefix, Actor: "api", PollInterval: 250 * time.Millisecond,
		ReplyPrefix: serveReplyPrefix, ActorKey: s.actorKey})
	if err != nil {
		return err
	}
	s.push("API client", func(context.Context) error { return apiClient.Close() })
	srv, err := api.New(api.Config{Client: apiClient, Store: apiStore, NC: s.conns["api"], Pool: s.readPool, Gatherer: s.reg,
		Tokens: s.apiTokens.tokens, LoopbackOnly: s.httpLoopback, ReadTimeout: cfg.httpReadTimeout, MaxWaits: cfg.httpMaxWaits,
		Registerer: s.reg, Provisioner: s.backend.kind, Webhooks: s.hooks, Logger: log.With("component", "api"), Deadlines: cfg.deadlines(),
		Ready: func(context.Context) error {
			if s.draining.Load() {
				return errors.New("shutting down")
			}
			return nil
		}})
	if err != nil {
		return err
	}
	// Requests run under a context that shutdown cancels: Shutdown alone
	// waits for open /wait long-polls (up to 10 minutes), which would eat
	// the shutdown budget of every part stopped after the API.
	reqCtx, cancelReqs := context.WithCancel(s.life)
	// The API bounds each request's body and answer itself (api.Config's
	// timeouts, longer for /wait); the server bounds the headers.
	hs := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute,
		MaxHeaderBytes: 64 << 10,
		ErrorLog:       slog.NewLogLogger(log.With("component", "http").Handler(), slog.LevelWarn),
		BaseContext:    func(net.Listener) context.Context { return reqCtx }}
	if s.httpTLS != nil {
		hs.TLSConfig = s.httpTLS.tlsConfig()
	}
	httpDone := make(chan struct{})
	s.served = true
	ln := s.ln
	go func() {
		defer close(httpDone)
		serve := func() error { return hs.Serve(ln) }
		if hs.TLSConfig != nil {
			serve = func() error { return hs.ServeTLS(ln, "", "") }
		}
		if err := serve(); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.failed(fmt.Errorf("HTTP API: %w", err))
		}
	}()
	s.push("HTTP API", func(ctx context.Context) error {
		cancelReqs()
		err := hs.Shutdown(ctx)
		if err != nil {
			_ = hs.Close()
		}
		<-httpDone
		return err
	})
	return nil
}

// watchPostgres fails the service if the local PostgreSQL exits while
// serve is not shutting down.
func (s *service) watchPostgres(context.Context) error {
	if s.db.srv == nil {
		return nil
	}
	go func() {
		select {
		case <-s.db.srv.Done():
			if !s.draining.Load() {
				s.failed(errors.New("the local PostgreSQL exited; see " + s.db.srv.Dir() + "/postgres.log"))
			}
		case <-s.life.Done():
		}
	}()
	return nil
}

// secretResolver reads secrets from the data dir's store (what 'turnstile
// secret set' writes) and then from --secrets-dir, if given.
func (s *service) secretResolver() *secrets.Resolver {
	store := s.a.secretStore()
	if fi, err := os.Stat(store.Dir()); err == nil && fi.Mode().Perm()&0o077 != 0 {
		// 'secret set' tightens it at its next write; say so now.
		s.log.Warn("the secrets directory is open to other users: chmod 700 it", "dir", store.Dir(), "mode", fi.Mode().Perm().String())
	}
	sources := []secrets.Source{store}
	if s.cfg.secretsDir != "" {
		sources = append(sources, secrets.NewStore(s.cfg.secretsDir))
	}
	return secrets.NewResolver(sources...)
}

// migrate applies the read model's migrations as the database's owner,
// then gives the other roles the tables.
func (s *service) migrate(ctx context.Context) error {
	pool, err := s.openPool(ctx, s.db.ownerURL, 2)
	if err != nil {
		return err
	}
	db := stdlib.OpenDBFromPool(pool)
	err = migrations.Up(ctx, db)
	_ = db.Close()
	pool.Close()
	if err != nil {
		return err
	}
	return s.db.migrated(ctx)
}

// openPool opens a pool on url, of maxConns unless the URL says
// (pool_max_conns), closed when serve stops.
func (s *service) openPool(ctx context.Context, url string, maxConns int32) (*pgxpool.Pool, error) {
	pcfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("database: %w", err)
	}
	if !strings.Contains(url, "pool_max_conns") {
		// The projector holds one connection and borrows a second while
		// two batches are in flight; the rest serve the API and metrics.
		pcfg.MaxConns = maxConns
	}
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, fmt.Errorf("database: %w", err)
	}
	s.push("database pool", func(context.Context) error { pool.Close(); return nil })
	return pool, nil
}

// run waits for ctx (a signal) or for a part that failed on its own.
func (s *service) run(ctx context.Context) error {
	select {
	case <-ctx.Done():
		s.log.Info("shutting down: no new commands; in-flight ones finish or go back to the stream", "cause", context.Cause(ctx))
		return nil
	case err := <-s.fatal:
		return err
	}
}

// serve runs the service until a signal and stops it cleanly.
func (a *app) serve(ctx context.Context, cfg serveConfig) error {
	log, err := a.logger()
	if err != nil {
		return err
	}
	s, err := a.startService(ctx, cfg, log)
	if err != nil {
		return err
	}
	s.banner()
	runErr := s.run(ctx)
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.shutdownTimeout)
	defer cancel()
	closeErr := s.close(cctx)
	if err := errors.Join(runErr, closeErr); err != nil {
		return err
	}
	log.Info("stopped cleanly")
	return nil
}

// engineName tells this serve's engine apart among the members: host and
// process.
func engineName() string { return fmt.Sprintf("%s/%d", hostName(), os.Getpid()) }

// hostName is this machine's name, as engineName and the simulator's
// identity give it.
func hostName() string {
	host, err := os.Hostname()
	if err != nil {
		return "unknown-host"
	}
	return host
}
