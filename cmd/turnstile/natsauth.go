package main

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/internal/atomicfile"
)

// natsTokenFile is where serve keeps the token of its embedded NATS's user
// role, inside --data-dir (mode 0600), for the client commands, which read
// it as they read database-url.
const natsTokenFile = "nats-token"

// NATS user names on the embedded server, as its log and monitoring show
// them.
const (
	natsSystemUser = "turnstile-serve"
	natsClientUser = "turnstile-user"
)

// natsAuth authenticates the embedded server's clients by token into one of
// two roles (issue 12 item 2): serve's own in-process connections (a token
// made at each start and never written anywhere) may do everything; the
// user role (the CLI, the Go client, `nats` against this server) may publish
// user commands and read, and nothing else.
type natsAuth struct {
	system, user []byte
	userPerms    *server.Permissions
}

var _ server.Authentication = (*natsAuth)(nil)

// Check implements server.Authentication.
func (a *natsAuth) Check(c server.ClientAuthentication) bool {
	o := c.GetOpts()
	if o == nil || o.Token == "" {
		return false
	}
	tok := []byte(o.Token)
	switch {
	case subtle.ConstantTimeCompare(tok, a.system) == 1:
		c.RegisterUser(&server.User{Username: natsSystemUser}) // no permissions: everything
		return true
	case subtle.ConstantTimeCompare(tok, a.user) == 1:
		c.RegisterUser(&server.User{Username: natsClientUser, Permissions: a.userPerms})
		return true
	}
	return false
}

// userPermissions is what the user role may do: publish user commands
// (JetStream publishes, answered on its _INBOX), read what Turnstile stores
// (stream and consumer info, direct gets, ordered consumers on the three
// streams), and subscribe to its inboxes and to events (waiters). Nothing
// else, notably: publishing events, outcomes or system reports; acking, or
// pulling from, or creating (which would update) serve's durable consumers;
// creating, updating, purging or deleting streams; deleting messages or
// consumers. serveDurables are the durable consumers serve keeps, by
// stream.
//
// Found by running create, get, list, history, audit (one and --all),
// wait, restart and delete under this role (TestNATSRoles), plus the reads
// the reliability checks make; docs/operations.md shows the same as a
// nats-server configuration for --nats-url.
func userPermissions(n events.Names, serveDurables map[string][]string) *server.Permissions {
	deny := []string{
		n.Events(), n.Outcomes(), n.Systems(),
		"$JS.ACK.>",
		"$JS.API.STREAM.CREATE.>", "$JS.API.STREAM.UPDATE.>", "$JS.API.STREAM.DELETE.>", "$JS.API.STREAM.PURGE.>",
		"$JS.API.STREAM.MSG.DELETE.>", "$JS.API.CONSUMER.DELETE.>", "$JS.API.CONSUMER.DURABLE.CREATE.>",
		"$JS.API.CONSUMER.PAUSE.>", "$JS.API.CONSUMER.UNPIN.>",
	}
	allow := []string{n.Commands()}
	for _, stream := range []string{n.CommandStream(), n.SystemStream(), n.EventStream()} {
		allow = append(allow,
			"$JS.API.STREAM.INFO."+stream,
			"$JS.API.DIRECT.GET."+stream, "$JS.API.DIRECT.GET."+stream+".>",
			"$JS.API.STREAM.MSG.GET."+stream, // tools such as `nats stream get`
			"$JS.API.CONSUMER.LIST."+stream, "$JS.API.CONSUMER.INFO."+stream+".*",
			// Ordered consumers (audit --all, rebuild): ephemeral, no
			// acks; they expire when idle.
			"$JS.API.CONSUMER.CREATE."+stream, "$JS.API.CONSUMER.CREATE."+stream+".>",
			"$JS.API.CONSUMER.MSG.NEXT."+stream+".*")
		for _, d := range serveDurables[stream] {
			deny = append(deny,
				"$JS.API.CONSUMER.CREATE."+stream+"."+d, "$JS.API.CONSUMER.CREATE."+stream+"."+d+".>",
				"$JS.API.CONSUMER.MSG.NEXT."+stream+"."+d)
		}
	}
	return &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: allow, Deny: deny},
		Subscribe: &server.SubjectPermission{Allow: []string{"_INBOX.>", n.Events()}},
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
	path := filepath.Join(dataDir, natsTokenFile)
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
