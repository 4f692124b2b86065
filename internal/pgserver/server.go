package pgserver

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/turnstile-dev/turnstile/internal/atomicfile"
)

// Options configure Start.
type Options struct {
	// Dir holds everything of this server: data/ (PGDATA, with the unix
	// socket), password and postgres.log. It is created and initialized
	// when needed; an initialized Dir is reused as it is.
	Dir string
	// Port is the loopback TCP port; 0 picks a free one.
	Port int
	// BinDir holds initdb and postgres; empty searches DefaultBinDirs.
	BinDir string
	// OSUser runs PostgreSQL when this process is root; default "postgres".
	OSUser string
	// Ephemeral trades durability for speed (initdb --no-sync, fsync=off,
	// full_page_writes=off, synchronous_commit=off): an OS crash can corrupt
	// the cluster. For tests only.
	Ephemeral bool
	// Settings are extra server settings (postgres -c name=value).
	Settings map[string]string
	Logger   *slog.Logger
}

// Superuser is the database role Start creates.
const Superuser = "postgres"

// Server is a running PostgreSQL started by Start.
type Server struct {
	opts     Options
	dataDir  string
	port     int
	password string
	cmd      *exec.Cmd
	done     chan struct{} // closed when the postgres process has exited
	waitErr  error         // set before done is closed
	log      *slog.Logger
}

// Start initializes opts.Dir if needed, starts PostgreSQL on 127.0.0.1 and
// returns once it accepts connections. ctx bounds the whole start.
func Start(ctx context.Context, opts Options) (*Server, error) {
	if opts.Dir == "" {
		return nil, errors.New("pgserver: Options.Dir is required")
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("pgserver: %w", err)
	}
	opts.Dir = dir
	if opts.OSUser == "" {
		opts.OSUser = "postgres"
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.BinDir == "" {
		if opts.BinDir, err = FindBinDir(DefaultBinDirs()...); err != nil {
			return nil, err
		}
	} else if _, err := FindBinDir(opts.BinDir); err != nil {
		return nil, err
	}
	acct, err := serverAccount(opts.OSUser)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("pgserver: %w", err)
	}
	if err := acct.own(dir); err != nil {
		return nil, err
	}
	if err := acct.checkReachable(dir); err != nil {
		return nil, err
	}
	password, err := ensurePassword(filepath.Join(dir, "password"), acct)
	if err != nil {
		return nil, err
	}
	s := &Server{opts: opts, dataDir: filepath.Join(dir, "data"), password: password, log: opts.Logger}
	if err := s.initdb(ctx, acct); err != nil {
		return nil, err
	}
	// A free port can be taken between choosing and binding it: try anew.
	attempts := 1
	if opts.Port == 0 {
		attempts = 3
	}
	for i := 0; ; i++ {
		s.port = opts.Port
		if s.port == 0 {
			if s.port, err = freePort(); err != nil {
				return nil, err
			}
		}
		err = s.launch(ctx, acct)
		if err == nil {
			s.log.Info("postgresql started", "dir", dir, "port", s.port, "pid", s.cmd.Process.Pid)
			return s, nil
		}
		if i+1 >= attempts || ctx.Err() != nil {
			return nil, err
		}
		s.log.Warn("postgresql did not start; trying another port", "port", s.port, "err", err)
	}
}

func (s *Server) initdb(ctx context.Context, acct *account) error {
	if _, err := os.Stat(filepath.Join(s.dataDir, "PG_VERSION")); err == nil {
		return nil
	}
	args := []string{"-D", s.dataDir, "-U", Superuser, "-E", "UTF8", "--locale=C",
		"--auth-host=scram-sha-256", "--auth-local=scram-sha-256",
		"--pwfile=" + filepath.Join(s.opts.Dir, "password")}
	if s.opts.Ephemeral {
		args = append(args, "--no-sync")
	}
	cmd := exec.CommandContext(ctx, filepath.Join(s.opts.BinDir, "initdb"), args...)
	cmd.Env = childEnv()
	acct.configure(cmd)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("pgserver: initdb %s: %w\n%s", s.dataDir, err, tail(out, 2048))
	}
	return nil
}

func (s *Server) launch(ctx context.Context, acct *account) error {
	args := []string{"-D", s.dataDir, "-p", strconv.Itoa(s.port), "-h", "127.0.0.1", "-k", s.socketDir()}
	for _, kv := range s.settings() {
		args = append(args, "-c", kv)
	}
	logPath := filepath.Join(s.opts.Dir, "postgres.log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("pgserver: %w", err)
	}
	defer logFile.Close() // the child holds its own descriptor
	start, err := logFile.Seek(0, io.SeekEnd)
	if err != nil {
		return fmt.Errorf("pgserver: %w", err)
	}
	cmd := exec.Command(filepath.Join(s.opts.BinDir, "postgres"), args...) //nolint:noctx // the server outlives Start's context; Stop ends it
	cmd.Env = childEnv()
	cmd.Stdout, cmd.Stderr = logFile, logFile
	acct.configure(cmd)
	// Fast shutdown if this process dies without calling Stop.
	cmd.SysProcAttr.Pdeathsig = syscall.SIGINT
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("pgserver: start postgres: %w", err)
	}
	s.cmd, s.done = cmd, make(chan struct{})
	go func() {
		s.waitErr = cmd.Wait()
		close(s.done)
	}()
	if err := s.waitReady(ctx); err != nil {
		s.kill()
		return fmt.Errorf("pgserver: postgres on port %d: %w\n%s", s.port, err, readTail(logPath, start, 4096))
	}
	return nil
}

// childEnv is the environment of initdb and postgres: not the caller's,
// which holds secrets (API and NATS tokens, database URLs) that the OS
// user PostgreSQL runs as could read in /proc/<pid>/environ. They need
// only a PATH, the C locale, TZ for the server's default time zone, and
// the dynamic loader's path for an install in its own prefix
// (--postgres-bin-dir) that relies on it.
func childEnv() []string {
	env := []string{"LC_ALL=C"}
	for _, k := range []string{"PATH", "TZ", "LD_LIBRARY_PATH"} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	return env
}

// socketDir is the data dir unless the socket path would exceed the
// kernel's limit (108 bytes), in which case only TCP is used.
func (s *Server) socketDir() string {
	if len(s.dataDir)+len("/.s.PGSQL.65535") >= 108 {
		s.log.Warn("data dir path too long for a unix socket; listening on TCP only", "dir", s.dataDir)
		return ""
	}
	return s.dataDir
}

func (s *Server) settings() []string {
	m := map[string]string{}
	if s.opts.Ephemeral {
		m["fsync"], m["full_page_writes"], m["synchronous_commit"] = "off", "off", "off"
	}
	for k, v := range s.opts.Settings {
		m[k] = v
	}
	out := make([]string, 0, len(m))
	for k, v := range m {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out
}

// waitReady polls with a ticker until a connection succeeds, the process
// exits, or ctx ends.
func (s *Server) waitReady(ctx context.Context) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	var last error
	for {
		select {
		case <-s.done:
			return fmt.Errorf("exited during startup: %v", s.waitErr)
		case <-ctx.Done():
			return fmt.Errorf("not ready (last attempt: %v): %w", last, ctx.Err())
		case <-t.C:
		}
		actx, cancel := context.WithTimeout(ctx, time.Second)
		conn, err := pgx.Connect(actx, s.URL("postgres"))
		cancel()
		if err == nil {
			return conn.Close(ctx)
		}
		last = err
	}
}

// Port is the TCP port the server listens on.
func (s *Server) Port() int { return s.port }

// Dir is the server's directory (Options.Dir, absolute).
func (s *Server) Dir() string { return s.opts.Dir }

// URL is a connection URL for database db as the superuser.
func (s *Server) URL(db string) string {
	return s.URLFor(Superuser, s.password, db)
}

// URLFor is a connection URL for database db as role user with password,
// on the server's loopback address: for roles the caller created.
func (s *Server) URLFor(user, password, db string) string {
	u := url.URL{Scheme: "postgres", User: url.UserPassword(user, password),
		Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)), Path: "/" + db,
		RawQuery: "sslmode=disable"}
	return u.String()
}

// CreateDatabase creates database name; one that exists already is fine.
func (s *Server) CreateDatabase(ctx context.Context, name string) error {
	conn, err := pgx.Connect(ctx, s.URL("postgres"))
	if err != nil {
		return fmt.Errorf("pgserver: connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	_, err = conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42P04" { // duplicate_database
		return nil
	}
	if err != nil {
		return fmt.Errorf("pgserver: create database %s: %w", name, err)
	}
	return nil
}

// Done is closed when the postgres process has exited.
func (s *Server) Done() <-chan struct{} { return s.done }

// Stop shuts the server down (fast mode: open transactions roll back) and
// waits for it. When ctx ends first, it is terminated immediately.
func (s *Server) Stop(ctx context.Context) error {
	select {
	case <-s.done:
		return nil
	default:
	}
	_ = s.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-s.done:
		s.log.Info("postgresql stopped", "dir", s.opts.Dir)
		return nil
	case <-ctx.Done():
		s.kill()
		return fmt.Errorf("pgserver: stop: %w", ctx.Err())
	}
}

// kill stops the server immediately (SIGQUIT), then for good.
func (s *Server) kill() {
	_ = s.cmd.Process.Signal(syscall.SIGQUIT)
	t := time.NewTimer(5 * time.Second)
	defer t.Stop()
	select {
	case <-s.done:
	case <-t.C:
		_ = s.cmd.Process.Kill()
		<-s.done
	}
}

// ensurePassword returns the superuser's password kept at path, generating
// it (crypto/rand) when there is none. The file is made 0600 in any case:
// one left readable by others (by hand, or by an older writer that kept an
// existing file's mode) is tightened rather than trusted.
func ensurePassword(path string, acct *account) (string, error) {
	if b, err := os.ReadFile(path); err == nil {
		if pw := strings.TrimSpace(string(b)); pw != "" {
			if err := os.Chmod(path, 0o600); err != nil {
				return "", fmt.Errorf("pgserver: password: %w", err)
			}
			return pw, acct.own(path)
		}
	}
	raw := make([]byte, 18)
	if _, err := rand.Read(raw); err != nil {
		return "", fmt.Errorf("pgserver: password: %w", err)
	}
	pw := hex.EncodeToString(raw)
	// Replaced, not rewritten: os.WriteFile would keep the mode of an
	// (empty) file already there.
	if err := atomicfile.Write(path, []byte(pw+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("pgserver: password: %w", err)
	}
	// initdb reads it as the server's user.
	return pw, acct.own(path)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pgserver: free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func readTail(path string, from int64, n int) string {
	b, err := os.ReadFile(path)
	if err != nil || int64(len(b)) < from {
		return ""
	}
	return tail(b[from:], n)
}

func tail(b []byte, n int) string {
	b = bytes.TrimSpace(b)
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}
