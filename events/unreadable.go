package events

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// ErrMisaddressed means a message decodes but is not what its subject says:
// an envelope of another workspace than its <prefix>.evt.<workspace>
// subject, or an outcome of another command than its <prefix>.out.<id>.
// Applying one would change a workspace or command that the subject does
// not name.
var ErrMisaddressed = errors.New("message does not belong to its subject")

// Unreadable is a message of the event stream that no reader can use: it
// does not decode (not JSON, another schema, an unknown type, too large) or
// it is misaddressed (ErrMisaddressed). The engine never writes one, so
// one is corruption or a forgery; every reader skips it, so that it stalls
// nothing, and reports it (the projector's dead_letters table, audit's
// findings, each component's quarantine counter).
type Unreadable struct {
	StreamSeq uint64
	Subject   string
	Time      time.Time // stream time
	Data      []byte    // the message as stored
	Err       error     // what is wrong with it
}

func (u *Unreadable) Error() string {
	return fmt.Sprintf("unreadable message at stream sequence %d (%s, %d bytes): %v", u.StreamSeq, u.Subject, len(u.Data), u.Err)
}

func (u *Unreadable) Unwrap() error { return u.Err }

// Quarantine reasons, a closed set for metrics and the dead-letter table.
const (
	ReasonMalformed    = "malformed"     // not JSON, or not an envelope or outcome record
	ReasonUnknownType  = "unknown_type"  // an event type this build does not know
	ReasonFutureSchema = "future_schema" // written by a newer build
	ReasonTooLarge     = "too_large"     // beyond MaxEnvelopeBytes
	ReasonMisaddressed = "misaddressed"  // ErrMisaddressed
)

// ReasonOf classifies why a message could not be read.
func ReasonOf(err error) string {
	var u *Unreadable
	if errors.As(err, &u) && len(u.Data) > MaxEnvelopeBytes {
		return ReasonTooLarge
	}
	switch {
	case errors.Is(err, ErrMisaddressed):
		return ReasonMisaddressed
	case errors.Is(err, ErrFutureSchema):
		return ReasonFutureSchema
	case errors.Is(err, ErrUnknownType):
		return ReasonUnknownType
	}
	return ReasonMalformed
}

// DecodeEvent decodes the envelope of a message on subject and checks that
// it belongs there. Every reader of the stream decodes events through it.
func (s *Store) DecodeEvent(subject string, data []byte) (Envelope, error) {
	return s.names.DecodeEventOn(s.codec, subject, data)
}

// DecodeEventOn decodes with c the envelope of a message on subject and
// checks that it belongs there (CheckEvent).
func (n Names) DecodeEventOn(c Codec, subject string, data []byte) (Envelope, error) {
	env, err := c.Decode(data)
	if err != nil {
		return Envelope{}, err
	}
	if err := n.CheckEvent(subject, env.Workspace); err != nil {
		return Envelope{}, err
	}
	return env, nil
}

// CheckEvent returns ErrMisaddressed unless subject is the event subject
// of workspace.
func (n Names) CheckEvent(subject, workspace string) error {
	if !n.IsEvent(subject) || n.WorkspaceOf(subject) != workspace {
		return fmt.Errorf("envelope of workspace %q on %s: %w", workspace, subject, ErrMisaddressed)
	}
	return nil
}

// DecodeOutcomeOn decodes the outcome record of a message on subject and
// checks that it belongs there (CheckOutcome).
func (n Names) DecodeOutcomeOn(subject string, data []byte) (OutcomeRecord, error) {
	o, err := DecodeOutcome(data)
	if err != nil {
		return OutcomeRecord{}, err
	}
	if err := n.CheckOutcome(subject, o.CommandID); err != nil {
		return OutcomeRecord{}, err
	}
	return o, nil
}

// CheckOutcome returns ErrMisaddressed unless subject is the outcome
// subject of command commandID.
func (n Names) CheckOutcome(subject, commandID string) error {
	if id, ok := strings.CutPrefix(subject, n.Prefix+".out."); !ok || id != commandID {
		return fmt.Errorf("outcome of command %q on %s: %w", commandID, subject, ErrMisaddressed)
	}
	return nil
}
