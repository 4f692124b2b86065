package main

import (
	"cmp"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"

	"github.com/turnstile-dev/turnstile/engine"
	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/internal/atomicfile"
)

// natsTokenFile is where serve keeps the token of its embedded NATS's user
// role, inside --data-dir (mode 0600), for the client commands, which read
// it as they read database-url.
const natsTokenFile = "nats-token"

// natsNkeyFile and natsAdminNkeyFile hold the nkey seeds with which the
// CLI's own connections authenticate, as the user role and as the admin
// role (the user role plus consumers of its own: `turnstile rebuild` reads
// the stream through one). An nkey is a challenge: the server's INFO
// carries a nonce, the client signs it, and the seed never leaves the
// client. A listener that took serve's NATS port while serve was stopped
// thus gets a signature of its own nonce, which opens nothing; a token
// would have opened serve's NATS at its next start.
const (
	natsNkeyFile      = "nats-nkey"
	natsAdminNkeyFile = "nats-admin-nkey"
)

// legacyAdminTokenFile is where serve kept the admin role's token before
// the admin role took an nkey; serve removes it, since it opens nothing.
const legacyAdminTokenFile = "nats-admin-token"

// NATS user names on the embedded server, as its log and monitoring show
// them.
const (
	natsSystemUser = "turnstile-serve"
	natsClientUser = "turnstile-user"
	natsAdminUser  = "turnstile-admin"
)

// natsAuth authenticates the embedded server's clients into one of three
// roles (issue 12 item 2): serve's own in-process connections (a token
// made at each start and never written anywhere) may do everything; the
// user role may publish user commands and read, and nothing else; the
// admin role adds consumers of its own. The user role takes the token
// (nats-token, for `nats` and other tools) or the user nkey (the CLI); the
// admin role only its nkey (rebuild).
type natsAuth struct {
	system, user          []byte
	relay                 []byte // the relay's (natsrelay.go), in the users' account
	relayPerms            *server.Permissions
	userKey, adminKey     string // public nkeys
	userPerms, adminPerms *server.Permissions
	// users is the account the user and admin roles sign in to
	// (linkUsersAccount), set once the server runs; until then they are
	// refused.
	users atomic.Pointer[server.Account]
}

var _ server.Authentication = (*natsAuth)(nil)

// Check implements server.Authentication. A client that presents an nkey
// is judged by it alone.
func (a *natsAuth) Check(c server.ClientAuthentication) bool {
	o := c.GetOpts()
	if o == nil {
		return false
	}
	if o.Nkey != "" {
		return a.checkNkey(c, o)
	}
	if o.Token == "" {
		return false
	}
	tok := []byte(o.Token)
	switch {
	case subtle.ConstantTimeCompare(tok, a.system) == 1:
		c.RegisterUser(&server.User{Username: natsSystemUser}) // no permissions: everything
		return true
	case subtle.ConstantTimeCompare(tok, a.user) == 1:
		users := a.users.Load()
		if users == nil {
			return false
		}
		c.RegisterUser(&server.User{Username: natsClientUser, Permissions: a.userPerms, Account: users})
		return true
	case len(a.relay) > 0 && subtle.ConstantTimeCompare(tok, a.relay) == 1:
		users := a.users.Load()
		if users == nil {
			return false
		}
		c.RegisterUser(&server.User{Username: natsRelayUser, Permissions: a.relayPerms, Account: users})
		return true
	}
	return false
}

// checkNkey admits a client whose nkey is the user's or the admin's and
// whose signature of this connection's nonce verifies. Without a nonce
// (the server always sends one) a signature could be replayed: refused.
func (a *natsAuth) checkNkey(c server.ClientAuthentication, o *server.ClientOpts) bool {
	users := a.users.Load()
	if users == nil {
		return false
	}
	var user *server.User
	switch o.Nkey {
	case a.userKey:
		user = &server.User{Username: natsClientUser, Permissions: a.userPerms, Account: users}
	case a.adminKey:
		user = &server.User{Username: natsAdminUser, Permissions: a.adminPerms, Account: users}
	default:
		return false
	}
	nonce := c.GetNonce()
	if len(nonce) == 0 || o.Sig == "" {
		return false
	}
	// nats.go sends base64url; the server itself takes standard too.
	sig, err := base64.RawURLEncoding.DecodeString(o.Sig)
	if err != nil {
		if sig, err = base64.StdEncoding.DecodeString(o.Sig); err != nil {
			return false
		}
	}
	pub, err := nkeys.FromPublicKey(o.Nkey)
	if err != nil || pub.Verify(nonce, sig) != nil {
		return false
	}
	c.RegisterUser(user)
	return true
}

// rolePermissions are what the user and admin roles may do.
//
// The user role: publish user commands (JetStream publishes, answered on
// its _INBOX), read what Turnstile stores (stream and consumer info, direct
// gets, single and batched), and subscribe to its inboxes and to events
// (waiters). Nothing else, notably: publishing events, outcomes or system
// reports; acking; creating, updating, purging or deleting streams;
// deleting messages; and creating consumers at all. A consumer create is
// refused because a permission sees only the subject, never the request:
// a push consumer's deliver subject may be <prefix>.evt.<ws>, which would
// write any message, headers and all, into the event stream, and an update
// of one of serve's consumers (its filter) would silently blind it (both
// seen in a review). Every CLI read but rebuild uses direct gets.
//
// The admin role is the user role plus consumers (create, through the
// subjects that name them, and pull) other than serveDurables, the durable
// consumers serve keeps, by stream: what
// `turnstile rebuild` needs for its ordered consumer. Its nkey seed is as
// sensitive as the database owner's URL; a holder could write into the
// event stream as above, and is trusted as an operator is.
//
// Found by running create, get, list, history, audit (one and --all),
// wait, explain, restart and delete under the user role and rebuild under
// the admin role (TestNATSRoles); docs/operations.md shows the same as a
// nats-server configuration for --nats-url.
func rolePermissions(n events.Names, serveDurables map[string][]string) (user, admin *server.Permissions) {
	deny := []string{
		n.Events(), n.Outcomes(), n.Systems(),
		"$JS.ACK.>",
		"$JS.API.STREAM.CREATE.>", "$JS.API.STREAM.UPDATE.>", "$JS.API.STREAM.DELETE.>", "$JS.API.STREAM.PURGE.>",
		"$JS.API.STREAM.MSG.DELETE.>", "$JS.API.CONSUMER.DELETE.>", "$JS.API.CONSUMER.DURABLE.CREATE.>",
		"$JS.API.CONSUMER.PAUSE.>", "$JS.API.CONSUMER.UNPIN.>",
	}
	// The engines' members bucket: who pulls which partition, for status.
	members := "KV_" + engine.MembersBucket(n, engineDurable)
	allow := []string{n.Commands(), "$JS.API.STREAM.INFO." + members, "$JS.API.DIRECT.GET." + members + ".>"}
	var consumers, serveOnly []string
	for _, stream := range []string{n.CommandStream(), n.SystemStream(), n.EventStream()} {
		allow = append(allow,
			"$JS.API.STREAM.INFO."+stream,
			"$JS.API.DIRECT.GET."+stream, "$JS.API.DIRECT.GET."+stream+".>",
			"$JS.API.STREAM.MSG.GET."+stream, // tools such as `nats stream get`
			"$JS.API.CONSUMER.LIST."+stream, "$JS.API.CONSUMER.INFO."+stream+".*")
		// Only the creates whose subject names the consumer: the server
		// takes the name from it. The legacy $JS.API.CONSUMER.CREATE.<stream>
		// takes it from the request, where no permission looks, and
		// creates or updates serve's own durables by it
		// (TestAdminCannotRedefineServeConsumers).
		consumers = append(consumers,
			"$JS.API.CONSUMER.CREATE."+stream+".>",
			"$JS.API.CONSUMER.MSG.NEXT."+stream+".*")
		serveOnly = append(serveOnly, "$JS.API.CONSUMER.CREATE."+stream)
		for _, d := range serveDurables[stream] {
			serveOnly = append(serveOnly,
				"$JS.API.CONSUMER.CREATE."+stream+"."+d, "$JS.API.CONSUMER.CREATE."+stream+"."+d+".>",
				"$JS.API.CONSUMER.MSG.NEXT."+stream+"."+d)
		}
	}
	sub := &server.SubjectPermission{Allow: []string{"_INBOX.>", n.Events()}}
	user = &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: allow, Deny: append(slices.Clone(deny), "$JS.API.CONSUMER.CREATE.>", "$JS.API.CONSUMER.MSG.NEXT.>")},
		Subscribe: sub,
	}
	admin = &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: append(slices.Clone(allow), consumers...), Deny: append(slices.Clone(deny), serveOnly...)},
		Subscribe: sub,
	}
	return user, admin
}

// usersAccount is the NATS account the user and admin roles sign in to;
// serve's own connections, and so every stream, are in the global one.
//
// Why apart: NATS checks a publish's subject against the permissions,
// never its reply subject, and the server sends its answer to a request
// there. In serve's account a stream whose subjects match stores that
// answer: a user's direct get of a command it had stored, answered on
// <prefix>.sys.<ws>, was a system report the engine applied, and acks and
// infos answered on <prefix>.evt.> or .out.> were events and outcomes
// (TestReplySubjectsWriteNothing). Across an import the server answers on
// a reply subject of its own making that leads back to the requester's
// account, where no stream listens.
const usersAccount = "TURNSTILE_USERS"

// serviceLink is a subject the users' account imports from serve's as a
// service: requests go in, answers come back. streamed: a request may get
// several answers (a batched direct get, a pull), for up to threshold.
// local, if set, is the import's subject in the users' account (same
// wildcards), where only serve's relay sends (natsrelay.go).
type serviceLink struct {
	subject   string
	local     string
	streamed  bool
	threshold time.Duration
}

// usersAccountLinks are what the users' account reaches in serve's: every
// subject either role may publish on as a service (rolePermissions still
// says which role may use which), and as streams the events (waiters) and
// the users' inboxes (the engine's direct replies, events.ReplyHeader).
func usersAccountLinks(n events.Names) (services []serviceLink, streams []string) {
	return []serviceLink{
		// Through serve's relay, which refuses some commands.
		{subject: n.Commands(), local: commandRelay + ".>"},
		{subject: streamInfo + ".>", local: streamInfoRelay + ".>"},
		{subject: "$JS.API.STREAM.MSG.GET.>"},
		// Through serve's relay, which bounds batched answers.
		{subject: directGetSubject + ".>", local: directGetRelay + ".>", streamed: true, threshold: 30 * time.Second},
		{subject: "$JS.API.CONSUMER.LIST.>"},
		{subject: "$JS.API.CONSUMER.INFO.>"},
		{subject: "$JS.API.CONSUMER.CREATE.>"},
		// A pull waits up to its expiry (nats.go: 30 s) and a heartbeat.
		{subject: "$JS.API.CONSUMER.MSG.NEXT.>", streamed: true, threshold: 2 * time.Minute},
	}, []string{n.Events(), "_INBOX.>"}
}

// linkUsersAccount makes the users' account on the running server srv,
// links it to serve's (the global account) and lets auth's roles in.
// After the start: an account declared before it would leave the global
// account without JetStream (nats-server enables it there only when no
// other account is configured).
func linkUsersAccount(srv *server.Server, auth *natsAuth, n events.Names) error {
	users, err := srv.RegisterAccount(usersAccount)
	if err != nil {
		return fmt.Errorf("the NATS users' account: %w", err)
	}
	serve := srv.GlobalAccount()
	to := []*server.Account{users}
	services, streams := usersAccountLinks(n)
	for _, l := range services {
		rt := server.Singleton
		if l.streamed {
			rt = server.Streamed
		}
		if err := serve.AddServiceExportWithResponse(l.subject, rt, to); err != nil {
			return fmt.Errorf("the NATS users' account: export %s: %w", l.subject, err)
		}
		if l.threshold > 0 {
			if err := serve.SetServiceExportResponseThreshold(l.subject, l.threshold); err != nil {
				return fmt.Errorf("the NATS users' account: export %s: %w", l.subject, err)
			}
		}
		if err := users.AddServiceImport(serve, cmp.Or(l.local, l.subject), l.subject); err != nil {
			return fmt.Errorf("the NATS users' account: import %s: %w", l.subject, err)
		}
	}
	for _, subject := range streams {
		if err := serve.AddStreamExport(subject, to); err != nil {
			return fmt.Errorf("the NATS users' account: export %s: %w", subject, err)
		}
		if err := users.AddStreamImport(serve, subject, ""); err != nil {
			return fmt.Errorf("the NATS users' account: import %s: %w", subject, err)
		}
	}
	auth.users.Store(users)
	return nil
}

// serveDurables are the durable consumers serve keeps, by stream, which
// no role may create or pull from. P is the streams' (fixed at install,
// read after the server starts): every name it can give an engine
// consumer is serve's. The partitions claim too: made by the admin role, it
// would decide (or block) the P of streams made before partitions.
func serveDurables(n events.Names, installation string) map[string][]string {
	var engineConsumers []string
	for k := range events.MaxPartitions {
		engineConsumers = append(engineConsumers, events.EngineConsumer(engineDurable, k))
	}
	return map[string][]string{
		n.CommandStream(): append(slices.Clone(engineConsumers), events.PartitionsClaim),
		n.SystemStream():  engineConsumers,
		n.EventStream():   {workerDurable(installation)},
	}
}

// newToken returns 32 random bytes, URL-safe base64 encoded.
func newToken() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("random token: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// natsUserToken returns the user role's token: --nats-token if given, else
// the one in <dataDir>/nats-token, made on first start (crypto/rand,
// written 0600 and atomically) and reused afterwards.
func natsUserToken(flagToken, dataDir string) (string, error) {
	if flagToken != "" {
		return flagToken, nil
	}
	return natsTokenIn(filepath.Join(dataDir, natsTokenFile))
}

// natsTokenIn returns the token in path, made on first use (crypto/rand,
// written 0600 and atomically) and reused afterwards.
func natsTokenIn(path string) (string, error) {
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		if tok := strings.TrimSpace(string(b)); tok != "" {
			// An older file may be more open than 0600: tighten it.
			if err := os.Chmod(path, 0o600); err != nil {
				return "", fmt.Errorf("NATS token file: %w", err)
			}
			return tok, nil
		}
	case !errors.Is(err, fs.ErrNotExist):
		return "", fmt.Errorf("read the NATS token: %w", err)
	}
	tok, err := newToken()
	if err != nil {
		return "", err
	}
	if err := atomicfile.Write(path, []byte(tok+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("write the NATS token: %w", err)
	}
	return tok, nil
}

// natsNkeyIn returns the public key of the user nkey whose seed is in
// path, made on first use (crypto/rand, written 0600 and atomically) and
// reused afterwards.
func natsNkeyIn(path string) (string, error) {
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		kp, err := nkeys.ParseDecoratedUserNKey(b)
		if err != nil {
			return "", fmt.Errorf("%s: not a NATS user nkey seed (%w); delete it to have serve make a new one", path, err)
		}
		defer kp.Wipe()
		// An older file may be more open than 0600: tighten it.
		if err := os.Chmod(path, 0o600); err != nil {
			return "", fmt.Errorf("NATS nkey file: %w", err)
		}
		return kp.PublicKey()
	case !errors.Is(err, fs.ErrNotExist):
		return "", fmt.Errorf("read the NATS nkey: %w", err)
	}
	kp, err := nkeys.CreateUser()
	if err != nil {
		return "", fmt.Errorf("make a NATS nkey: %w", err)
	}
	defer kp.Wipe()
	seed, err := kp.Seed()
	if err != nil {
		return "", fmt.Errorf("make a NATS nkey: %w", err)
	}
	if err := atomicfile.Write(path, append(seed, '\n'), 0o600); err != nil {
		return "", fmt.Errorf("write the NATS nkey: %w", err)
	}
	return kp.PublicKey()
}
