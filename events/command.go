package events

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/internal/jsonstrict"
)

// MaxCommandBytes bounds a command on the wire.
const MaxCommandBytes = 64 << 10

// EncodeCommand validates and marshals a command for <prefix>.cmd.<workspace>.
func EncodeCommand(c fsm.Command) ([]byte, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	b, err := json.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("encode command: %w", err)
	}
	if len(b) > MaxCommandBytes {
		return nil, fsm.Invalid(c.Type, "command is %d bytes: at most %d allowed", len(b), MaxCommandBytes)
	}
	return b, nil
}

// DecodeCommand parses and validates a command: unknown fields, a key
// given twice and a field name in another case are refused. Every error is a
// *fsm.Rejection with code invalid and a message naming what is wrong.
// subjectWorkspace, when not empty, must match the command's workspace.
func DecodeCommand(b []byte, subjectWorkspace string) (fsm.Command, error) {
	// A command that passes takes one pass written for fsm.Command
	// (decode_command.go); the strict decoder below defines what passes
	// and says what is wrong with the rest (issue 16: it was the engine's
	// biggest item in a profile).
	if c, ok := decodeCommandFast(b, subjectWorkspace); ok {
		return c, nil
	}
	return decodeCommandStrict(b, subjectWorkspace)
}

// decodeCommandStrict is DecodeCommand on encoding/json and jsonstrict:
// the definition of what DecodeCommand accepts and of its refusals.
func decodeCommandStrict(b []byte, subjectWorkspace string) (fsm.Command, error) {
	var c fsm.Command
	if len(b) > MaxCommandBytes {
		return c, fsm.Invalid("", "command is %d bytes: at most %d allowed", len(b), MaxCommandBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		var se *json.SyntaxError
		var te *json.UnmarshalTypeError
		switch {
		case errors.As(err, &se):
			return c, fsm.Invalid("", "command is not valid JSON at byte %d: %v", se.Offset, err)
		case errors.As(err, &te):
			return c, fsm.Invalid(c.Type, "command field %q has the wrong type: %v", te.Field, err)
		default:
			return c, fsm.Invalid(c.Type, "command is malformed: %v", err)
		}
	}
	// Not dec.More(): it reports false for a trailing ']' or '}'.
	if rest := bytes.TrimLeft(b[dec.InputOffset():], " \t\r\n"); len(rest) > 0 {
		return c, fsm.Invalid(c.Type, "command has trailing data after the JSON object")
	}
	// encoding/json keeps the last of two equal keys and matches field
	// names ignoring case: what one reader of this command sees another
	// may not (issue 12 item 11), so neither is accepted.
	if err := jsonstrict.For[fsm.Command](b); err != nil {
		return c, fsm.Invalid(c.Type, "command: %v", err)
	}
	if subjectWorkspace != "" && c.Workspace != subjectWorkspace {
		return c, fsm.Invalid(c.Type, "command names workspace %q but was published for %q", c.Workspace, subjectWorkspace)
	}
	// EncodeCommand validates and bounds the re-encoded size, which can be
	// up to six times b's (json.Marshal writes '<' as \u003c): whatever is
	// accepted here must fit an event envelope, which holds the spec twice.
	if _, err := EncodeCommand(c); err != nil {
		if fsm.RejectionCode(err) == "" {
			err = fsm.Invalid(c.Type, "%v", err)
		}
		return c, err
	}
	return c, nil
}
