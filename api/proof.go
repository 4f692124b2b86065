package api

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"net/http"
)

// ProofPath is the route where serve proves that it holds an API token
// before a client sends it: GET ProofPath?nonce=<fresh random>, answered
// with one TokenProof per configured token. No token is needed to ask: a
// client must not send its token to find out whether the listener it
// reached is serve (a local user may have bound serve's port while serve
// was stopped).
const ProofPath = "/v1/auth/proof"

// Nonce bounds of ProofPath, in characters of the base64url alphabet: at
// least 128 random bits, and short enough for a request line.
const (
	MinProofNonce = 22
	MaxProofNonce = 128
)

// ProofAnswer is ProofPath's body: a proof per token serve accepts, in no
// particular order and without names, so that it says nothing of which
// tokens exist but how many.
type ProofAnswer struct {
	Proofs []string `json:"proofs"`
}

// Labels that keep a proof from being anything else: the key is not the
// secret, and what it signs is marked as a proof of this route's version.
const (
	proofKeyLabel = "turnstile api-token proof key v1"
	proofLabel    = "turnstile api-token proof v1\x00"
)

// TokenProof is what a holder of secret answers to nonce on ProofPath:
// HMAC-SHA256 under a key derived from the secret (an HMAC of a fixed
// label), of a fixed label and the nonce; base64url without padding.
//
// It is not a credential: the API takes the secret itself, and nothing
// else in Turnstile is keyed by the secret, so an answer serve gives to
// anyone for any nonce can only be checked, never replayed. Like any
// proof of a secret, it lets whoever asks check a guess of the secret
// offline: tokens must be random (at least MinTokenLength characters;
// NewSecret's are 256 bits).
func TokenProof(secret, nonce string) string {
	return proofUnder(proofKey(secret), nonce)
}

func proofKey(secret string) []byte {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(proofKeyLabel))
	return m.Sum(nil)
}

func proofUnder(key []byte, nonce string) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(proofLabel))
	m.Write([]byte(nonce))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// ValidProofNonce reports whether nonce is of the length and alphabet
// ProofPath takes.
func ValidProofNonce(nonce string) bool {
	if len(nonce) < MinProofNonce || len(nonce) > MaxProofNonce {
		return false
	}
	for i := 0; i < len(nonce); i++ {
		c := nonce[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// proveTokens answers ProofPath. The keys are derived once, here; the
// route needs no token (authorize lets it pass) and publishes nothing.
func (s *Server) proveTokens() http.HandlerFunc {
	keys := make([][]byte, len(s.cfg.Tokens))
	for i, t := range s.cfg.Tokens {
		keys[i] = proofKey(t.Secret)
	}
	return func(w http.ResponseWriter, r *http.Request) {
		if err := onlyParams(r, "nonce"); err != nil {
			s.writeError(w, r, err)
			return
		}
		nonce := r.URL.Query().Get("nonce")
		if !ValidProofNonce(nonce) {
			s.writeError(w, r, badField("nonce", "want 22 to 128 characters of base64url (a fresh random value of at least 128 bits)"))
			return
		}
		ans := ProofAnswer{Proofs: make([]string, len(keys))}
		for i, k := range keys {
			ans.Proofs[i] = proofUnder(k, nonce)
		}
		w.Header().Set("Cache-Control", "no-store")
		writeJSON(w, http.StatusOK, ans)
	}
}
