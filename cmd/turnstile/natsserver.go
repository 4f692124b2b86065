package main

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/turnstile-dev/turnstile/api"
	"github.com/turnstile-dev/turnstile/events"
)

// serveInboxPrefix is the inbox prefix of serve's own NATS connections
// (JetStream requests, pulls), and serveReplyPrefix that of the engine's
// direct replies to the API. Users' inboxes are under _INBOX: a user may
// read _INBOX.> and the engine replies there, but neither reaches serve's
// own inboxes (issue 12 items 2 and 4).
const (
	serveInboxPrefix = "_TURNSTILE_INBOX"
	serveReplyPrefix = "_TURNSTILE_REPLY"
)

// embeddedNATS is the nats-server serve runs when no --nats-url is given.
type embeddedNATS struct {
	srv      *server.Server
	addr     string
	storeDir string
	sync     bool
	// systemToken authenticates serve's own connections (all permissions);
	// made at each start, never written anywhere.
	systemToken string
	// tokenSource says where clients find the user role's token.
	tokenSource string
	// relays are the connections of the users' relay (natsrelay.go).
	relays []*nats.Conn
}

// startNATS starts the embedded server with JetStream's file store in
// <dataDir>/nats and returns once it accepts connections.
//
// Every client must authenticate (natsAuth): serve's own connections with a
// token made at each start; the user role (userPerms) with its token
// (--nats-token, else <dataDir>/nats-token, made on first start) or the
// nkey in <dataDir>/nats-nkey; the admin role (adminPerms) with the nkey
// in <dataDir>/nats-admin-nkey (both made on first start). As for the
// HTTP API, listening beyond loopback takes an explicit --nats-token.
func startNATS(addr, syncPolicy, token, dataDir string, names events.Names, userPerms, adminPerms *server.Permissions, log *slog.Logger) (*embeddedNATS, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, usageError(fmt.Errorf("--nats-listen %q: %w", addr, err))
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 0 || port > 65535 {
		return nil, usageError(fmt.Errorf("--nats-listen %q: bad port", addr))
	}
	if token == "" && !api.IsLoopback(host) {
		shown := host
		if shown == "" {
			shown = "every interface"
		}
		return nil, usageError(fmt.Errorf("the embedded NATS would listen on %s (%s), beyond loopback, without a token: "+
			"set --nats-token (TURNSTILE_NATS_TOKEN), or listen on 127.0.0.1", addr, shown))
	}
	if port == 0 {
		// Port 0 means any free port, as for --http-addr; nats-server
		// would take 0 as its default, 4222, and spells "any" -1. The
		// URL serve writes to nats-url names the port it got.
		port = server.RANDOM_PORT
	} else {
		// Ask the kernel first: nats-server's own complaint about a taken
		// port is a log line, not an error.
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, portTaken("NATS", addr, err, "--nats-listen", "or use the server that holds it with --nats-url")
		}
		_ = l.Close()
	}
	userToken, err := natsUserToken(token, dataDir)
	if err != nil {
		return nil, err
	}
	userKey, err := natsNkeyIn(filepath.Join(dataDir, natsNkeyFile))
	if err != nil {
		return nil, err
	}
	adminKey, err := natsNkeyIn(filepath.Join(dataDir, natsAdminNkeyFile))
	if err != nil {
		return nil, err
	}
	if err := os.Remove(filepath.Join(dataDir, legacyAdminTokenFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("remove the old admin token: %w", err)
	}
	systemToken, err := newToken()
	if err != nil {
		return nil, err
	}
	relayToken, err := newToken()
	if err != nil {
		return nil, err
	}
	n := &embeddedNATS{addr: addr, storeDir: filepath.Join(dataDir, "nats"), sync: syncPolicy == "always", systemToken: systemToken,
		tokenSource: filepath.Join(dataDir, natsTokenFile)}
	if token != "" {
		n.tokenSource = "--nats-token (TURNSTILE_NATS_TOKEN)"
	}
	auth := &natsAuth{system: []byte(systemToken), user: []byte(userToken), relay: []byte(relayToken), relayPerms: relayPermissions(names),
		userKey: userKey, adminKey: adminKey, userPerms: userPerms, adminPerms: adminPerms}
	srv, err := server.NewServer(&server.Options{
		ServerName: "turnstile",
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   n.storeDir,
		SyncAlways: n.sync,
		NoSigs:     true,
		MaxPayload: 1 << 20,
		// A nonce in every INFO, for the nkeys: natsAuth checks their
		// signatures itself, so the server would not send one otherwise.
		AlwaysEnableNonce:          true,
		CustomClientAuthentication: auth,
	})
	if err != nil {
		return nil, fmt.Errorf("embedded NATS: %w", err)
	}
	srv.SetLoggerV2(natsLogger{log.With("component", "nats-server")}, false, false, false)
	srv.Start()
	if !srv.ReadyForConnections(30 * time.Second) {
		srv.Shutdown()
		return nil, fmt.Errorf("embedded NATS on %s did not become ready in 30s (see the log above)", addr)
	}
	if !srv.JetStreamEnabled() {
		srv.Shutdown()
		return nil, errors.New("embedded NATS started without JetStream (see the log above): is " + n.storeDir + " writable?")
	}
	if err := linkUsersAccount(srv, auth, names); err != nil {
		srv.Shutdown()
		return nil, err
	}
	n.srv = srv
	if n.relays, err = startRelay(srv, relayToken, names, log.With("component", "nats-relay")); err != nil {
		n.shutdown()
		return nil, err
	}
	return n, nil
}

// url is the server's client URL.
func (n *embeddedNATS) url() string { return n.srv.ClientURL() }

// connect opens an in-process connection (no TCP) to the server.
func (n *embeddedNATS) connect(name string) (*nats.Conn, error) {
	opts := []nats.Option{nats.InProcessServer(n.srv), nats.Name(name), nats.MaxReconnects(-1), nats.CustomInboxPrefix(serveInboxPrefix)}
	opts = append(opts, nats.Token(n.systemToken))
	nc, err := nats.Connect("", opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to the embedded NATS: %w", err)
	}
	return nc, nil
}

// shutdown stops the server and waits for it.
func (n *embeddedNATS) shutdown() {
	closeAll(n.relays)
	n.srv.Shutdown()
	n.srv.WaitForShutdown()
}

// natsLogger routes nats-server's log to slog; its notices are debug lines.
type natsLogger struct{ log *slog.Logger }

func (l natsLogger) Noticef(format string, v ...any) { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l natsLogger) Warnf(format string, v ...any)   { l.log.Warn(fmt.Sprintf(format, v...)) }
func (l natsLogger) Fatalf(format string, v ...any)  { l.log.Error(fmt.Sprintf(format, v...)) }
func (l natsLogger) Errorf(format string, v ...any)  { l.log.Error(fmt.Sprintf(format, v...)) }
func (l natsLogger) Debugf(format string, v ...any)  { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l natsLogger) Tracef(format string, v ...any)  { l.log.Debug(fmt.Sprintf(format, v...)) }

// portTaken explains a port that cannot be bound and what to do.
func portTaken(what, addr string, err error, flag, alternative string) error {
	return fmt.Errorf("%s address %s is taken (%v): is another 'turnstile serve' running? Stop it, choose another address with %s (%s)%s",
		what, addr, err, flag, envName(flag[2:]), prefixed(", ", alternative))
}

func prefixed(sep, s string) string {
	if s == "" {
		return ""
	}
	return sep + s
}
