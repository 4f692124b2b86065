package api

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/turnstile-dev/turnstile/fsm"
)

const (
	// MinTokenLength is the shortest token secret accepted, in characters:
	// a guessable token would open an API that starts root containers.
	MinTokenLength = 32
	// MaxTokenLength keeps a token within one ordinary header line.
	MaxTokenLength = 512
	// DefaultTokenName names a token given without a name: its commands
	// are recorded with the actor "api:default".
	DefaultTokenName = "default"
	// ActorPrefix starts the actor of every command sent over HTTP; the
	// token's name follows.
	ActorPrefix = fsm.APIActorPrefix
)

// Token is one credential of the HTTP API: the secret a caller sends as
// "Authorization: Bearer <secret>", and the name recorded as the actor
// ("api:<name>") of the commands it sends.
type Token struct {
	Name   string
	Secret string
}

// String names the token without its secret, so that a logged Token
// never leaks it.
func (t Token) String() string { return t.Name + ":<secret>" }

// tokenName is a token's name: short, lowercase, safe in an actor and a log.
var tokenName = regexp.MustCompile(`^[a-z0-9]([a-z0-9_.-]{0,62}[a-z0-9])?$`)

// ParseToken reads "SECRET" (named DefaultTokenName) or "NAME:SECRET" and
// checks both parts. A secret with a ':' in it needs a name in front: the
// name ends at the first ':'.
func ParseToken(s string) (Token, error) {
	t := Token{Name: DefaultTokenName, Secret: s}
	if name, secret, ok := strings.Cut(s, ":"); ok {
		t = Token{Name: name, Secret: secret}
		// What stands before the ':' may be part of a secret that holds
		// one: never shown.
		if !tokenName.MatchString(name) {
			return t, errors.New("API token: the name before the first ':' is not valid (not shown, as it may be part of the secret): use 1 to 64 lowercase letters, digits, '-', '_' or '.', as in NAME:SECRET; a secret that holds a ':' needs a name in front, such as " + DefaultTokenName + ":SECRET")
		}
	}
	return t, t.Validate()
}

// Validate checks the name and the secret. Its errors never show the
// secret.
func (t Token) Validate() error {
	if !tokenName.MatchString(t.Name) {
		return fmt.Errorf("API token name %q: use 1 to 64 lowercase letters, digits, '-', '_' or '.', as in NAME:SECRET", t.Name)
	}
	return ValidateSecret(t.Secret)
}

// ValidateSecret refuses a secret that is too short to resist guessing, too
// long for a header, or has characters a header cannot carry.
func ValidateSecret(s string) error {
	const how = "make one with 'turnstile token' (or: openssl rand -hex 32)"
	if len(s) < MinTokenLength {
		return fmt.Errorf("API token is %d characters: at least %d are needed; %s", len(s), MinTokenLength, how)
	}
	if len(s) > MaxTokenLength {
		return fmt.Errorf("API token is %d characters: at most %d are allowed; %s", len(s), MaxTokenLength, how)
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] > '~' {
			return fmt.Errorf("API token has a character that is not printable ASCII (at byte %d): %s", i, how)
		}
	}
	return nil
}

// NewSecret returns a fresh random token secret: 32 bytes from
// crypto/rand, base64url without padding (43 characters).
func NewSecret() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("make an API token: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// ValidateTokens checks every token and that names and secrets are unique
// (one secret under two names would make the recorded actor a guess).
func ValidateTokens(tokens []Token) error {
	if len(tokens) == 0 {
		return errors.New("no API token: the HTTP API is never open; give one (turnstile token makes one)")
	}
	names := map[string]bool{}
	secrets := map[string]string{}
	for _, t := range tokens {
		if err := t.Validate(); err != nil {
			return err
		}
		if names[t.Name] {
			return fmt.Errorf("API token name %q is given twice", t.Name)
		}
		names[t.Name] = true
		if other, ok := secrets[t.Secret]; ok {
			return fmt.Errorf("API tokens %q and %q have the same secret", other, t.Name)
		}
		secrets[t.Secret] = t.Name
	}
	return nil
}

// tokenSet matches presented secrets against the configured tokens by
// their SHA-256 digests, in constant time and without stopping at the
// first match, so timing tells nothing about which token or how much of
// it was right.
type tokenSet struct {
	names   []string
	digests [][sha256.Size]byte
}

func newTokenSet(tokens []Token) tokenSet {
	var ts tokenSet
	for _, t := range tokens {
		ts.names = append(ts.names, t.Name)
		ts.digests = append(ts.digests, sha256.Sum256([]byte(t.Secret)))
	}
	return ts
}

// match returns the name of the token whose secret is presented.
func (ts tokenSet) match(presented string) (string, bool) {
	d := sha256.Sum256([]byte(presented))
	found := -1
	for i := range ts.digests {
		if subtle.ConstantTimeCompare(d[:], ts.digests[i][:]) == 1 {
			found = i
		}
	}
	if found < 0 {
		return "", false
	}
	return ts.names[found], true
}

// bearer returns the credentials of an "Authorization: Bearer <token>"
// header; the scheme is case-insensitive (RFC 9110, 11.1).
func bearer(header string) (string, bool) {
	scheme, cred, ok := strings.Cut(strings.TrimSpace(header), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	cred = strings.TrimSpace(cred)
	return cred, cred != ""
}

type tokenNameKey struct{}

// TokenName returns the name of the token that authorized the request
// whose context this is ("" outside such a request).
func TokenName(ctx context.Context) string {
	name, _ := ctx.Value(tokenNameKey{}).(string)
	return name
}
