package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// Environment variables the agent reads.
const (
	EnvAddr       = "AGENT_ADDR"        // listen address, default :8080
	EnvStartDelay = "AGENT_START_DELAY" // Go duration before /healthz answers 200
	EnvExitAfter  = "AGENT_EXIT_AFTER"  // Go duration after which the agent exits
	EnvExitCode   = "AGENT_EXIT_CODE"   // exit code for AGENT_EXIT_AFTER, default 1
)

// DefaultAddr is where the agent listens unless AGENT_ADDR says otherwise.
const DefaultAddr = ":8080"

// Config is what the agent does.
type Config struct {
	// Addr is the listen address.
	Addr string
	// Listener, when set, is used instead of listening on Addr (tests).
	Listener net.Listener
	// StartDelay is how long /healthz answers 503 after start.
	StartDelay time.Duration
	// ExitAfter, when set, makes Run end with an *ExitError carrying
	// ExitCode after that long.
	ExitAfter *time.Duration
	ExitCode  int
	Logger    *slog.Logger
}

// ConfigFromEnv reads a Config from getenv (os.Getenv in production).
func ConfigFromEnv(getenv func(string) string) (Config, error) {
	c := Config{Addr: DefaultAddr, ExitCode: 1}
	if v := getenv(EnvAddr); v != "" {
		c.Addr = v
	}
	if v := getenv(EnvStartDelay); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			return c, fmt.Errorf("%s=%q is not a non-negative Go duration such as 2s", EnvStartDelay, v)
		}
		c.StartDelay = d
	}
	if v := getenv(EnvExitAfter); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			return c, fmt.Errorf("%s=%q is not a non-negative Go duration such as 2s", EnvExitAfter, v)
		}
		c.ExitAfter = &d
	}
	if v := getenv(EnvExitCode); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > 255 {
			return c, fmt.Errorf("%s=%q is not an exit code 0-255", EnvExitCode, v)
		}
		c.ExitCode = n
	}
	return c, nil
}

// ExitError ends Run when Config.ExitAfter elapses.
type ExitError struct{ Code int }

func (e *ExitError) Error() string { return fmt.Sprintf("exiting with code %d as configured", e.Code) }

// Run serves /healthz on cfg.Addr until ctx is done (then it returns nil
// after a graceful shutdown) or cfg.ExitAfter elapses (*ExitError).
func Run(ctx context.Context, cfg Config) error {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Addr == "" {
		cfg.Addr = DefaultAddr
	}
	var exit <-chan time.Time
	if cfg.ExitAfter != nil {
		if *cfg.ExitAfter == 0 {
			log.Info("exiting at once as configured", "code", cfg.ExitCode)
			if cfg.Listener != nil {
				_ = cfg.Listener.Close()
			}
			return &ExitError{Code: cfg.ExitCode}
		}
		t := time.NewTimer(*cfg.ExitAfter)
		defer t.Stop()
		exit = t.C
	}
	ln := cfg.Listener
	if ln == nil {
		var err error
		if ln, err = (&net.ListenConfig{}).Listen(ctx, "tcp", cfg.Addr); err != nil {
			return fmt.Errorf("listen on %s: %w", cfg.Addr, err)
		}
	}
	var ready atomic.Bool
	readyAt := time.Now().Add(cfg.StartDelay)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		if !ready.Load() && !time.Now().Before(readyAt) {
			ready.Store(true)
		}
		if !ready.Load() {
			http.Error(w, "starting", http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ok\n")
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	log.Info("agent listening", "addr", ln.Addr().String(), "start_delay", cfg.StartDelay)

	var result error
	select {
	case <-ctx.Done():
		log.Info("agent stopping", "cause", context.Cause(ctx))
	case <-exit:
		log.Info("agent exiting as configured", "code", cfg.ExitCode)
		result = &ExitError{Code: cfg.ExitCode}
	case err := <-served:
		return fmt.Errorf("serve: %w", err)
	}
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		_ = srv.Close()
	}
	if err := <-served; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	return result
}

// Healthcheck asks the agent at addr for /healthz and fails unless it
// answers 200.
func Healthcheck(ctx context.Context, addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("address %q: %w", addr, err)
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	url := "http://" + net.JoinHostPort(host, port) + "/healthz"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("probe %s: %w", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 256))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("probe %s: %s: %s", url, resp.Status, strings.TrimSpace(string(body)))
	}
	return nil
}

// Writable checks that the agent's user can create files in each dir: it
// creates and removes one. It is how an operator (docker exec) or a test
// sees what a security profile leaves writable, in an image with no shell.
func Writable(dirs ...string) error {
	for _, dir := range dirs {
		f, err := os.CreateTemp(dir, ".agent-writable-*")
		if err != nil {
			return fmt.Errorf("%s is not writable: %w", dir, err)
		}
		name := f.Name()
		_ = f.Close()
		if err := os.Remove(name); err != nil {
			return fmt.Errorf("%s: remove the probe file: %w", dir, err)
		}
	}
	return nil
}

// Main is the agent's command line: "agent" serves, "agent healthcheck"
// probes, "agent writable DIR..." checks that each DIR is writable. It
// returns the process exit code. ctx should end on SIGTERM.
func Main(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) int {
	cfg, err := ConfigFromEnv(getenv)
	if err != nil {
		fmt.Fprintln(stderr, "agent:", err)
		return 2
	}
	cfg.Logger = slog.New(slog.NewTextHandler(stderr, nil))
	switch {
	case len(args) == 0 || (len(args) == 1 && args[0] == "serve"):
		err := Run(ctx, cfg)
		var exit *ExitError
		switch {
		case errors.As(err, &exit):
			return exit.Code
		case err != nil:
			fmt.Fprintln(stderr, "agent:", err)
			return 1
		}
		return 0
	case len(args) == 1 && args[0] == "healthcheck":
		hctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		if err := Healthcheck(hctx, cfg.Addr); err != nil {
			fmt.Fprintln(stderr, "agent:", err)
			return 1
		}
		return 0
	case len(args) > 1 && args[0] == "writable":
		if err := Writable(args[1:]...); err != nil {
			fmt.Fprintln(stderr, "agent:", err)
			return 1
		}
		return 0
	default:
		fmt.Fprintf(stderr, "usage: agent [serve|healthcheck|writable DIR...]\n")
		return 2
	}
}
