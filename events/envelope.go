package events

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/turnstile-dev/turnstile/fsm"
)

// SchemaVersion is the envelope version this build writes.
const SchemaVersion = 1

// MaxEnvelopeBytes bounds a stored envelope; anything larger is refused.
const MaxEnvelopeBytes = 256 << 10

// Envelope is one event as stored: the fsm.Event plus who, when, why, where
// in the workspace's history, and the state it produces.
type Envelope struct {
	ID            string        `json:"id"`
	Workspace     string        `json:"workspace"`
	Seq           uint64        `json:"seq"` // per-workspace, from 1
	Type          fsm.EventType `json:"type"`
	SchemaVersion int           `json:"schema_version"`
	Generation    uint64        `json:"generation"`
	SpecVersion   uint64        `json:"spec_version"`
	Time          time.Time     `json:"time"`
	CommandID     string        `json:"command_id"`
	Actor         string        `json:"actor,omitempty"`
	Payload       Payload       `json:"payload"`
	State         fsm.Workspace `json:"state"`
	// StreamSeq is the stream sequence the envelope was read at; it is not
	// stored (it is only known after the append).
	StreamSeq uint64 `json:"-"`
}

// Payload is the event-specific part of an envelope.
type Payload struct {
	Spec        *fsm.Spec `json:"spec,omitempty"`
	Reason      string    `json:"reason,omitempty"`
	ExitCode    *int      `json:"exit_code,omitempty"`
	ContainerID string    `json:"container_id,omitempty"`
}

// Event returns the fsm.Event the envelope records.
func (e *Envelope) Event() fsm.Event {
	return fsm.Event{Type: e.Type, Generation: e.Generation, SpecVersion: e.SpecVersion,
		Spec: e.Payload.Spec, Reason: e.Payload.Reason, ExitCode: e.Payload.ExitCode, ContainerID: e.Payload.ContainerID}
}

// NewEnvelope wraps an event decided for cmd against prev.
func NewEnvelope(id string, prev fsm.Workspace, ev fsm.Event, cmd fsm.Command, now time.Time) Envelope {
	state := fsm.Apply(prev, ev)
	return Envelope{
		ID: id, Workspace: cmd.Workspace, Seq: state.Seq, Type: ev.Type, SchemaVersion: SchemaVersion,
		Generation: ev.Generation, SpecVersion: ev.SpecVersion, Time: now.UTC(),
		CommandID: cmd.ID, Actor: cmd.Actor,
		Payload: Payload{Spec: ev.Spec, Reason: ev.Reason, ExitCode: ev.ExitCode, ContainerID: ev.ContainerID},
		State:   state,
	}
}

// ErrUnknownType and ErrFutureSchema classify envelopes this build cannot read.
var (
	ErrUnknownType  = errors.New("unknown event type")
	ErrFutureSchema = errors.New("event schema version is newer than this build")
	ErrMalformed    = errors.New("malformed event")
)

// Upcaster rewrites a raw envelope of schema version `from` into version
// from+1. Register one per old version in a Codec.
type Upcaster func(raw map[string]json.RawMessage) error

// Codec encodes and decodes envelopes. The zero Codec reads and writes the
// current version only.
type Codec struct {
	// Upcasters[v] lifts version v to v+1.
	Upcasters map[int]Upcaster
}

// Encode marshals an envelope.
func (c Codec) Encode(e Envelope) ([]byte, error) {
	if !e.Type.Known() {
		return nil, fmt.Errorf("encode %q: %w", e.Type, ErrUnknownType)
	}
	b, err := json.Marshal(e)
	if err != nil {
		return nil, fmt.Errorf("encode event: %w", err)
	}
	if len(b) > MaxEnvelopeBytes {
		return nil, fmt.Errorf("encode event: %d bytes exceeds %d: %w", len(b), MaxEnvelopeBytes, ErrMalformed)
	}
	return b, nil
}

// Decode unmarshals an envelope, upcasting old versions and refusing unknown
// types and future versions.
func (c Codec) Decode(b []byte) (Envelope, error) {
	var e Envelope
	if len(b) > MaxEnvelopeBytes {
		return e, fmt.Errorf("decode event: %d bytes exceeds %d: %w", len(b), MaxEnvelopeBytes, ErrMalformed)
	}
	// The common case, a current envelope, takes one strict pass; anything
	// else goes the long way, which upcasts or says exactly what is wrong.
	if err := decodeStrict(b, &e); err == nil && e.SchemaVersion == SchemaVersion {
		return e, validateDecoded(e)
	}
	e = Envelope{}
	var head struct {
		SchemaVersion int    `json:"schema_version"`
		Type          string `json:"type"`
	}
	if err := json.Unmarshal(b, &head); err != nil {
		return e, fmt.Errorf("decode event: %w: %v", ErrMalformed, err)
	}
	switch {
	case head.SchemaVersion > SchemaVersion:
		return e, fmt.Errorf("decode event: schema version %d, this build reads up to %d: %w", head.SchemaVersion, SchemaVersion, ErrFutureSchema)
	case head.SchemaVersion < 1:
		return e, fmt.Errorf("decode event: schema version %d: %w", head.SchemaVersion, ErrMalformed)
	case head.SchemaVersion < SchemaVersion:
		up, err := c.upcast(b, head.SchemaVersion)
		if err != nil {
			return e, err
		}
		b = up
	}
	if err := decodeStrict(b, &e); err != nil {
		return e, fmt.Errorf("decode event: %w: %v", ErrMalformed, err)
	}
	return e, validateDecoded(e)
}

// decodeStrict decodes one envelope, refusing unknown fields.
func decodeStrict(b []byte, e *Envelope) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(e); err != nil {
		return err
	}
	if rest := bytes.TrimLeft(b[dec.InputOffset():], " \t\r\n"); len(rest) > 0 {
		return errors.New("trailing data after the envelope")
	}
	return nil
}

// validateDecoded checks what JSON alone cannot.
func validateDecoded(e Envelope) error {
	if !e.Type.Known() {
		return fmt.Errorf("decode event: type %q: %w", e.Type, ErrUnknownType)
	}
	if err := fsm.ValidateID(e.Workspace); err != nil {
		return fmt.Errorf("decode event: %w: %v", ErrMalformed, err)
	}
	if e.Seq == 0 || e.Generation == 0 {
		return fmt.Errorf("decode event: seq and generation start at 1: %w", ErrMalformed)
	}
	// A status the engine never writes: the read model could not even
	// store one longer than an index entry may be.
	if !e.State.Status.Known() {
		return fmt.Errorf("decode event: status %s: %w", QuoteInput(string(e.State.Status)), ErrMalformed)
	}
	return nil
}

func (c Codec) upcast(b []byte, from int) ([]byte, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("decode event: %w: %v", ErrMalformed, err)
	}
	for v := from; v < SchemaVersion; v++ {
		up, ok := c.Upcasters[v]
		if !ok {
			return nil, fmt.Errorf("decode event: no upcaster from schema version %d: %w", v, ErrMalformed)
		}
		if err := up(raw); err != nil {
			return nil, fmt.Errorf("decode event: upcast from version %d: %w", v, err)
		}
		raw["schema_version"] = json.RawMessage(fmt.Sprint(v + 1))
	}
	return json.Marshal(raw)
}
