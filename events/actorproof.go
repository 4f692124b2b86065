package events

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// The API's actors. serve's HTTP API records the token's name as a
// command's actor ("api:<name>", fsm.IsAPIActor), and it reaches the engine
// on the same subjects as a NATS user's commands, whose actor their sender
// writes. So the API signs its commands: ActorProofHeader carries an HMAC,
// under a key only serve's connections can read (the installation's actor
// key), of the time and the command's bytes. The engine decides a command
// with an API actor only when the proof verifies and its time is within
// the duplicate window of the message's: a copy sent again later by
// someone who read it from the stream is refused, and one sent within the
// window is a duplicate of the first (its id and bytes are the first's).

// ActorProofHeader carries the API's proof of a command's actor:
// "<unix milliseconds>.<base64url HMAC-SHA256>".
const ActorProofHeader = "Turnstile-Actor-Proof"

// ActorKeySize is the length of an actor key, in bytes.
const ActorKeySize = 32

// ErrActorProof is returned by CheckActorProof for a command whose API
// actor is not proven.
var ErrActorProof = errors.New("API actor not proven")

// ActorProof is the proof, at time at, of a command encoded as data.
func ActorProof(key []byte, at time.Time, data []byte) string {
	ms := strconv.FormatInt(at.UnixMilli(), 10)
	return ms + "." + base64.RawURLEncoding.EncodeToString(actorMAC(key, ms, data))
}

func actorMAC(key []byte, ms string, data []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(ms))
	m.Write([]byte{'.'})
	m.Write(data)
	return m.Sum(nil)
}

// CheckActorProof checks proof of a command encoded as data, stored at
// stored: it must verify under key (a nil key verifies nothing) and be
// made within window of stored, either side. The error wraps
// ErrActorProof and says what is wrong without repeating the proof.
func CheckActorProof(key []byte, proof string, data []byte, stored time.Time, window time.Duration) error {
	if proof == "" {
		return fmt.Errorf("%w: the command carries no %s header", ErrActorProof, ActorProofHeader)
	}
	ms, sig, ok := strings.Cut(proof, ".")
	at, err := strconv.ParseInt(ms, 10, 64)
	if !ok || err != nil || len(ms) > 19 {
		return fmt.Errorf("%w: the %s header is not <unix milliseconds>.<signature>", ErrActorProof, ActorProofHeader)
	}
	got, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil || len(key) == 0 || !hmac.Equal(got, actorMAC(key, ms, data)) {
		return fmt.Errorf("%w: the %s header does not verify under this installation's actor key", ErrActorProof, ActorProofHeader)
	}
	if d := stored.Sub(time.UnixMilli(at)).Abs(); d > window {
		return fmt.Errorf("%w: the proof was made %v apart from when the command was stored, more than the %v allowed: a command sent again later is not the API's",
			ErrActorProof, d.Round(time.Millisecond), window)
	}
	return nil
}
