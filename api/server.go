package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/turnstile-dev/turnstile/client"
	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/ui"
)

// Config wires a Server. Client and Store are required; without Pool the
// read-model routes answer 503.
type Config struct {
	// Client publishes commands and waits for their outcomes.
	Client *client.Client
	// Store is the event store: history and wait.
	Store *events.Store
	// NC, when set, wakes waiters as soon as an event is appended (they
	// also poll the store, so it is an optimisation only).
	NC *nats.Conn
	// Pool reads the PostgreSQL read model.
	Pool *pgxpool.Pool
	// Gatherer serves /metrics; nil serves no metrics.
	Gatherer prometheus.Gatherer
	// Tokens are the credentials the API accepts, as "Authorization:
	// Bearer <secret>", on every route but /healthz and /readyz; at least
	// one is required: the API is never open. A command's actor is
	// "api:<name>" of the token that sent it.
	Tokens []Token
	// LoopbackOnly refuses requests whose Host is not a loopback name
	// (421): set it when the listener is on loopback, against DNS
	// rebinding.
	LoopbackOnly bool
	// ReadTimeout bounds the upload of a request's body (a body trickled
	// in is cut off); default 30s. WriteTimeout bounds a request from its
	// headers to the end of its answer; default CommandTimeout + 30s.
	// /wait has its own: its timeout plus WaitGrace.
	ReadTimeout, WriteTimeout time.Duration
	// MaxWaits caps the /wait requests, follow streams and GET /v1/audit
	// requests open at once, together; beyond it they are answered 429
	// with Retry-After. Default DefaultMaxWaits.
	MaxWaits int
	// MaxOutcomeScan bounds how many outcomes, of every workspace, one
	// page of GET .../outcomes reads: a workspace among busy ones answers
	// a short page with next_after rather than scanning the whole
	// stream. Default DefaultMaxOutcomeScan.
	MaxOutcomeScan int
	// Registerer, when set, registers the API's own metrics.
	Registerer prometheus.Registerer
	// Provisioner is the provisioner kind, "docker" or "sim", for /readyz.
	Provisioner string
	// Ready, when set, is asked by /readyz besides NATS and PostgreSQL; an
	// error makes it answer 503 with the error's text.
	Ready func(ctx context.Context) error
	// CommandTimeout bounds the wait for a command's outcome; default 30s.
	CommandTimeout time.Duration
	// DefaultWait and MaxWait are /wait's default and largest timeout;
	// defaults 30s and 10m.
	DefaultWait, MaxWait time.Duration
	// PollInterval is how often waiters read the store; default 250ms.
	PollInterval time.Duration
	// KeepAlive is how often an idle follow stream sends a comment;
	// default DefaultKeepAlive.
	KeepAlive time.Duration
	// ProgressInterval is the least time between two progress lines of
	// GET /v1/audit's ndjson answer; default DefaultProgressInterval.
	ProgressInterval time.Duration
	// Deadlines are serve's deadlines per in-flight state, for explain;
	// a state without one shows no deadline.
	Deadlines map[fsm.Status]time.Duration
	// Webhooks, when set, serves /v1/webhooks; without it those routes
	// answer 503.
	Webhooks Webhooks
	// EngineDurable is the engine's durable consumer on the command
	// stream, for explain's queued commands; default "turnstile-engine".
	EngineDurable string
	Logger        *slog.Logger
}

func (c *Config) setDefaults() {
	if c.CommandTimeout <= 0 {
		c.CommandTimeout = 30 * time.Second
	}
	if c.DefaultWait <= 0 {
		c.DefaultWait = 30 * time.Second
	}
	if c.MaxWait <= 0 {
		c.MaxWait = 10 * time.Minute
	}
	if c.PollInterval <= 0 {
		c.PollInterval = 250 * time.Millisecond
	}
	if c.ReadTimeout <= 0 {
		c.ReadTimeout = 30 * time.Second
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = c.CommandTimeout + 30*time.Second
	}
	if c.KeepAlive <= 0 {
		c.KeepAlive = DefaultKeepAlive
	}
	if c.ProgressInterval <= 0 {
		c.ProgressInterval = DefaultProgressInterval
	}
	if c.EngineDurable == "" {
		c.EngineDurable = DefaultEngineDurable
	}
	if c.MaxOutcomeScan <= 0 {
		c.MaxOutcomeScan = DefaultMaxOutcomeScan
	}
	if c.MaxWaits <= 0 {
		c.MaxWaits = DefaultMaxWaits
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Server is the HTTP API. It is safe for concurrent use.
type Server struct {
	cfg     Config
	log     *slog.Logger
	handler http.Handler
	tokens  tokenSet
	waits   chan struct{} // a slot per open /wait
	metrics metrics
}

// DefaultMaxWaits is Config.MaxWaits's default.
const DefaultMaxWaits = 256

// DefaultMaxOutcomeScan is Config.MaxOutcomeScan's default.
const DefaultMaxOutcomeScan = 10000

// WaitGrace is how long past its timeout a /wait may take to be answered.
const WaitGrace = 30 * time.Second

// New checks cfg and builds the routes. It starts nothing: serve
// Handler with an http.Server.
func New(cfg Config) (*Server, error) {
	if cfg.Client == nil || cfg.Store == nil {
		return nil, errors.New("api: Config.Client and Config.Store are required")
	}
	if err := ValidateTokens(cfg.Tokens); err != nil {
		return nil, fmt.Errorf("api: %w", err)
	}
	cfg.setDefaults()
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, fmt.Errorf("api: %w", err)
	}
	s := &Server{cfg: cfg, log: cfg.Logger, tokens: newTokenSet(cfg.Tokens), waits: make(chan struct{}, cfg.MaxWaits), metrics: m}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/workspaces", s.create)
	mux.HandleFunc("GET /v1/workspaces", s.list)
	mux.HandleFunc("GET /v1/workspaces/{id}", s.get)
	mux.HandleFunc("DELETE /v1/workspaces/{id}", s.command(fsm.Delete))
	mux.HandleFunc("POST /v1/workspaces/{id}/start", s.command(fsm.Start))
	mux.HandleFunc("POST /v1/workspaces/{id}/stop", s.command(fsm.Stop))
	mux.HandleFunc("POST /v1/workspaces/{id}/restart", s.command(fsm.Restart))
	mux.HandleFunc("PUT /v1/workspaces/{id}/spec", s.configure)
	mux.HandleFunc("GET /v1/cluster", s.cluster)
	mux.HandleFunc("GET /v1/workspaces/{id}/events", s.events)
	mux.HandleFunc("GET /v1/workspaces/{id}/wait", s.wait)
	mux.HandleFunc("GET /v1/workspaces/{id}/explain", s.explain)
	mux.HandleFunc("GET /v1/workspaces/{id}/outcomes", s.outcomes)
	mux.HandleFunc("GET /v1/workspaces/{id}/audit", s.auditOne)
	mux.HandleFunc("GET /v1/events", s.streamEvents)
	mux.HandleFunc("GET /v1/audit", s.auditAll)
	mux.HandleFunc("POST /v1/webhooks", s.addWebhook)
	mux.HandleFunc("GET /v1/webhooks", s.listWebhooks)
	mux.HandleFunc("DELETE /v1/webhooks/{id}", s.removeWebhook)
	mux.HandleFunc("GET "+ProofPath, s.proveTokens())
	mux.HandleFunc("GET /healthz", s.healthz)
	mux.HandleFunc("GET /readyz", s.readyz)
	if cfg.Gatherer != nil {
		mux.Handle("GET /metrics", promhttp.HandlerFor(cfg.Gatherer, promhttp.HandlerOpts{ErrorLog: slogPrinter{s.log}}))
	}
	mux.HandleFunc("GET /v1/openapi.json", s.serveOpenAPI)
	ui.Register(mux) // the timeline page: GET / and /ui/<file>
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { noRoute(mux, w, r) })
	s.handler = s.measure(mux, s.logRequests(noSniff(s.limitTime(s.checkHost(s.authorize(s.checkOrigin(s.checkContentType(mux))))))))
	return s, nil
}

// Handler is the API's http.Handler.
func (s *Server) Handler() http.Handler { return s.handler }

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	r.status = code
	r.ResponseWriter.WriteHeader(code)
}

// Unwrap lets http.ResponseController reach the connection's deadlines.
func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// effectiveStatus tells every status recorder around w that the answer's
// status is code, though another went out first: a streamed answer whose
// error came after its 200.
func effectiveStatus(w http.ResponseWriter, code int) {
	for w != nil {
		if rec, ok := w.(*statusRecorder); ok {
			rec.status = code
		}
		u, ok := w.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			return
		}
		w = u.Unwrap()
	}
}

func (s *Server) logRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(rec, r)
		s.log.Debug("http", "method", r.Method, "path", r.URL.Path, "status", rec.status, "duration", time.Since(start), "remote", r.RemoteAddr)
	})
}

type slogPrinter struct{ log *slog.Logger }

func (p slogPrinter) Println(v ...any) {
	p.log.Error("metrics", "err", strings.TrimSpace(fmt.Sprintln(v...)))
}

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// Readiness is /readyz's body.
type Readiness struct {
	Ready bool `json:"ready"`
	// Provisioner is "docker" or "sim"; Simulated is true for sim, whose
	// workspaces run no containers.
	Provisioner string            `json:"provisioner"`
	Simulated   bool              `json:"simulated"`
	Checks      map[string]string `json:"checks"`
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	rd := Readiness{Ready: true, Provisioner: s.cfg.Provisioner, Simulated: s.cfg.Provisioner == "sim", Checks: map[string]string{}}
	check := func(name string, err error) {
		if err != nil {
			rd.Ready = false
			rd.Checks[name] = err.Error()
			return
		}
		rd.Checks[name] = "ok"
	}
	_, err := s.cfg.Store.LastSeq(ctx)
	check("nats", err)
	if s.cfg.Pool != nil {
		check("postgres", s.cfg.Pool.Ping(ctx))
	}
	if s.cfg.Ready != nil {
		check("serve", s.cfg.Ready(ctx))
	}
	status := http.StatusOK
	if !rd.Ready {
		status = http.StatusServiceUnavailable
	}
	writeJSON(w, status, rd)
}

// IsLoopback reports whether host (a name or an IP, no port) is only
// reachable from this machine.
func IsLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && ip.IsLoopback()
}
