package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/turnstile-dev/turnstile/client"
	"github.com/turnstile-dev/turnstile/events"
)

// defaultNATSURL is where client commands find serve's embedded NATS.
const defaultNATSURL = "nats://127.0.0.1:4222"

// databaseURLFile is where serve writes the URL of the PostgreSQL it
// started, inside --data-dir, for the client commands and for psql: the
// read-only role's.
const databaseURLFile = "database-url"

// databaseOwnerURLFile is where serve writes the URL of the role that owns
// the read model, for the commands that change its schema or tables
// (migrate, rebuild).
const databaseOwnerURLFile = "database-owner-url"

// natsOptions are the connection options the flags ask for.
func (a *app) natsOptions(name string) []nats.Option {
	opts := []nats.Option{nats.Name(name), nats.MaxReconnects(-1), nats.ReconnectWait(250 * time.Millisecond)}
	if a.natsCreds != "" {
		opts = append(opts, nats.UserCredentials(a.natsCreds))
	}
	if a.natsNkey != "" {
		if o, err := nats.NkeyOptionFromSeed(a.natsNkey); err == nil {
			opts = append(opts, o)
		} else {
			opts = append(opts, func(*nats.Options) error { return fmt.Errorf("--nats-nkey %s: %w", a.natsNkey, err) })
		}
	}
	if a.natsUser != "" {
		opts = append(opts, nats.UserInfo(a.natsUser, a.natsPassword))
	}
	if a.natsToken != "" {
		opts = append(opts, nats.Token(a.natsToken))
	}
	if a.natsTLSCert != "" || a.natsTLSKey != "" {
		opts = append(opts, nats.ClientCert(a.natsTLSCert, a.natsTLSKey))
	}
	if a.natsTLSCA != "" {
		opts = append(opts, nats.RootCAs(a.natsTLSCA))
	}
	return opts
}

// clientNATSURL is the NATS URL of client commands: --nats-url, else the
// one serve wrote to <data-dir>/nats-url, else defaultNATSURL.
func (a *app) clientNATSURL() string {
	if a.natsURL != "" {
		return a.natsURL
	}
	if u, err := a.dataDirFile(natsURLFile); err == nil && u != "" {
		return u
	}
	return defaultNATSURL
}

// natsNkeyFromDataDir is the path of the nkey seed serve wrote to file
// in the data dir, used when no --nats-* credential is given (for the
// admin role, none but --nats-token) and the URL carries none; "" if there
// is no such file. The CLI never sends the data dir's nats-token: an nkey
// proves the client holds it without sending it to whatever listens at
// the URL.
func (a *app) natsNkeyFromDataDir(url, file string) (string, error) {
	if a.natsCreds != "" || a.natsNkey != "" || a.natsUser != "" || strings.Contains(url, "@") {
		return "", nil
	}
	if a.natsToken != "" && file == natsNkeyFile {
		return "", nil // --nats-token is the user role's token
	}
	path := filepath.Join(a.dataDir, file)
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read the NATS key serve wrote: %w (pass --nats-token, or run as the user that runs serve)", err)
	}
	_ = f.Close()
	return path, nil
}

// connectNATS connects a client command to NATS as the user role.
func (a *app) connectNATS(ctx context.Context) (*nats.Conn, error) {
	return a.connectNATSWith(ctx, natsNkeyFile)
}

// connectNATSAdmin connects as the admin role, for rebuild's consumer.
func (a *app) connectNATSAdmin(ctx context.Context) (*nats.Conn, error) {
	return a.connectNATSWith(ctx, natsAdminNkeyFile)
}

// connectNATSWith connects a client command to NATS with the nkey serve
// wrote to file in the data dir, unless a credential is given.
func (a *app) connectNATSWith(ctx context.Context, file string) (*nats.Conn, error) {
	url := a.clientNATSURL()
	opts := append(a.natsOptions("turnstile-cli"), nats.RetryOnFailedConnect(false))
	// As database-url: serve's embedded NATS requires the key it wrote.
	seed, err := a.natsNkeyFromDataDir(url, file)
	if err != nil {
		return nil, err
	}
	if seed != "" {
		o, err := nats.NkeyOptionFromSeed(seed)
		if err != nil {
			return nil, fmt.Errorf("the NATS key serve wrote to %s: %w (delete it and restart serve to have a new one made)", seed, err)
		}
		opts = append(opts, o)
	}
	nc, err := connectUntil(ctx, url, opts...)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("connecting to NATS at %s: %w", withoutUserinfo(url), ctx.Err())
		}
		if errors.Is(err, nats.ErrAuthorization) {
			return nil, fmt.Errorf("NATS at %s refused this client: %w (serve's embedded NATS wants the key in %s: run from the directory serve runs in, or pass --data-dir or --nats-token)",
				withoutUserinfo(url), redactURLError(err), filepath.Join(a.dataDir, file))
		}
		return nil, fmt.Errorf("cannot reach NATS at %s: %w (is 'turnstile serve' running? otherwise pass --nats-url or set TURNSTILE_NATS_URL)", withoutUserinfo(url), redactURLError(err))
	}
	return nc, nil
}

// natsConnectTimeout bounds each step of a client command's connect to
// NATS (the dial, the server's greeting, its answer to CONNECT): an
// address that takes the connection and says nothing is reported after
// it, not at the command's own deadline (minutes for history).
const natsConnectTimeout = 10 * time.Second

// connectUntil is nats.Connect that also gives up when ctx ends:
// nats.Connect takes no context, so each connection it makes while
// connecting is closed at ctx's end, which ends the dial or the read it
// waits in. Once connected, the connection no longer depends on ctx, and
// reconnects dial as nats.go would.
func connectUntil(ctx context.Context, url string, opts ...nats.Option) (*nats.Conn, error) {
	d := &ctxDialer{ctx: ctx, d: net.Dialer{Timeout: natsConnectTimeout}}
	nc, err := nats.Connect(url, append(opts, nats.Timeout(natsConnectTimeout), nats.SetCustomDialer(d))...)
	d.connected()
	return nc, err
}

// ctxDialer is connectUntil's dialer.
type ctxDialer struct {
	ctx context.Context
	d   net.Dialer

	mu    sync.Mutex
	done  bool          // connect returned: dial without ctx
	stops []func() bool // of the AfterFuncs closing connect's connections
}

func (d *ctxDialer) Dial(network, addr string) (net.Conn, error) {
	d.mu.Lock()
	ctx := d.ctx
	if d.done {
		ctx = context.Background()
	}
	d.mu.Unlock()
	conn, err := d.d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.done { // else a reconnect, dialled as connect returned
		d.stops = append(d.stops, context.AfterFunc(d.ctx, func() { _ = conn.Close() }))
	}
	return conn, nil
}

// connected unties the connections made so far from ctx.
func (d *ctxDialer) connected() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.done = true
	for _, stop := range d.stops {
		stop()
	}
	d.stops = nil
}

// openClient connects and returns a client and its connection; closeFn
// releases both.
func (a *app) openClient(ctx context.Context) (cl *client.Client, nc *nats.Conn, closeFn func(), err error) {
	nc, err = a.connectNATS(ctx)
	if err != nil {
		return nil, nil, nil, err
	}
	cl, err = client.New(ctx, nc, client.Options{Prefix: a.prefix, Actor: actorName(a.getenv), PollInterval: 250 * time.Millisecond})
	if err != nil {
		nc.Close()
		return nil, nil, nil, streamsMissing(err)
	}
	return cl, nc, func() { _ = cl.Close(); nc.Close() }, nil
}

// openStore connects and binds to the event stream; closeFn closes the
// connection.
func (a *app) openStore(ctx context.Context) (store *events.Store, nc *nats.Conn, closeFn func(), err error) {
	nc, err = a.connectNATS(ctx)
	if err != nil {
		return nil, nil, nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, nil, err
	}
	store, err = events.OpenStore(ctx, js, events.NewNames(a.prefix), events.Codec{})
	if err != nil {
		nc.Close()
		return nil, nil, nil, streamsMissing(err)
	}
	return store, nc, nc.Close, nil
}

func streamsMissing(err error) error {
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("%w: NATS answers but has no Turnstile streams; start 'turnstile serve' (it creates them) or check --prefix", err)
	}
	return err
}

// actorName is who commands are recorded as coming from: $USER, else "cli".
func actorName(getenv func(string) string) string {
	if u := getenv("USER"); u != "" {
		return "cli:" + u
	}
	return "cli"
}

// resolveDatabaseURL is --database-url, or else the URL serve wrote: the
// read-only role's, or the owner's if owner.
func (a *app) resolveDatabaseURL(owner bool) (string, error) {
	if a.databaseURL != "" {
		return a.databaseURL, nil
	}
	file := databaseURLFile
	if owner {
		file = databaseOwnerURLFile
	}
	path := filepath.Join(a.dataDir, file)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("no database URL: pass --database-url (or set TURNSTILE_DATABASE_URL), or run 'turnstile serve' with --data-dir %s, which writes it to %s", a.dataDir, path)
	}
	if err != nil {
		return "", fmt.Errorf("read the database URL: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// openPool connects to the read model to read it.
func (a *app) openPool(ctx context.Context) (*pgxpool.Pool, error) {
	return a.connectDatabase(ctx, false)
}

// openOwnerPool connects to the read model as its owner, to change it.
func (a *app) openOwnerPool(ctx context.Context) (*pgxpool.Pool, error) {
	return a.connectDatabase(ctx, true)
}

func (a *app) connectDatabase(ctx context.Context, owner bool) (*pgxpool.Pool, error) {
	url, err := a.resolveDatabaseURL(owner)
	if err != nil {
		return nil, err
	}
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, usageError(fmt.Errorf("database URL: %w", err))
	}
	cfg.MaxConns = 4
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("database: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("cannot reach PostgreSQL at %s:%d: %w (is 'turnstile serve' running?)", cfg.ConnConfig.Host, cfg.ConnConfig.Port, err)
	}
	return pool, nil
}
