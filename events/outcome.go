package events

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/turnstile-dev/turnstile/fsm"
)

// OutcomeRecord is what became of one command, as published on
// <prefix>.out.<command id>. Every command the engine takes gets exactly one.
type OutcomeRecord struct {
	CommandID   string          `json:"command_id"`
	Workspace   string          `json:"workspace"`
	CommandType fsm.CommandType `json:"command_type"`
	Actor       string          `json:"actor,omitempty"`
	Outcome     fsm.Outcome     `json:"outcome"`
	// EventSeq is the per-workspace sequence of the recorded event (accepted
	// only): the event is the message of <prefix>.evt.<workspace> whose
	// envelope has this seq. (Its stream sequence is not known when the
	// outcome is written in the same atomic batch.)
	EventSeq uint64 `json:"event_seq,omitempty"`
	// Generation and State are the workspace's after the command.
	Generation uint64     `json:"generation"`
	State      fsm.Status `json:"state"`
	// CommandGeneration is the generation a system command reported on.
	CommandGeneration uint64         `json:"command_generation,omitempty"`
	Rejection         *fsm.Rejection `json:"rejection,omitempty"`
	// Reason explains stale and no-op outcomes.
	Reason     string    `json:"reason,omitempty"`
	ReceivedAt time.Time `json:"received_at"`
	DecidedAt  time.Time `json:"decided_at"`
}

// Answers reports whether o, found under cmd's id, is cmd's own outcome:
// same workspace and type; for a system report, the same generation and
// the same kind of observation (a redone provision that failed where the
// first try succeeded, or the other way round, is the same report: its id
// names the attempt, not the result). Anything else is another command
// that used the id first.
func (o OutcomeRecord) Answers(cmd fsm.Command) bool {
	if o.Workspace != cmd.Workspace {
		return false
	}
	if !cmd.Type.IsSystem() {
		return o.CommandType == cmd.Type
	}
	return o.CommandGeneration == cmd.Generation && reportKind(o.CommandType) == reportKind(cmd.Type)
}

// reportKind is what a system report observes: the end of a provision, a
// stop or a delete, a container exit, a deadline. "" for user commands.
func reportKind(t fsm.CommandType) string {
	switch t {
	case fsm.ProvisionSucceeded, fsm.ProvisionFailed:
		return "provision"
	case fsm.StopSucceeded, fsm.StopFailed:
		return "stop"
	case fsm.DeleteSucceeded, fsm.DeleteFailed:
		return "delete"
	}
	if t.IsSystem() {
		return string(t)
	}
	return ""
}

// maxOutcomeText bounds a rejection's message and a reason in an outcome
// record that would otherwise exceed MaxEnvelopeBytes: six times it (the
// most JSON escaping grows a byte) twice over fits with room to spare.
const maxOutcomeText = 8 << 10

// EncodeOutcome marshals an outcome record. It never returns one
// DecodeOutcome refuses: a record past MaxEnvelopeBytes has its
// rejection's message and its reason shortened to fit (the refusal stands;
// only its explanation is cut), and one that still does not fit is an
// error. Stored, such a record would make its command id's outcome
// unreadable for ever.
func EncodeOutcome(o OutcomeRecord) ([]byte, error) {
	b, err := json.Marshal(o)
	if err != nil {
		return nil, fmt.Errorf("encode outcome: %w", err)
	}
	if len(b) <= MaxEnvelopeBytes {
		return b, nil
	}
	if o.Rejection != nil {
		r := *o.Rejection // the caller's stays whole
		r.Message = clip(r.Message, maxOutcomeText)
		o.Rejection = &r
	}
	o.Reason = clip(o.Reason, maxOutcomeText)
	if b, err = json.Marshal(o); err != nil {
		return nil, fmt.Errorf("encode outcome: %w", err)
	}
	if len(b) > MaxEnvelopeBytes {
		return nil, fmt.Errorf("encode outcome of %s: %d bytes exceeds %d: %w", QuoteInput(o.CommandID), len(b), MaxEnvelopeBytes, ErrMalformed)
	}
	return b, nil
}

// DecodeOutcome unmarshals an outcome record.
func DecodeOutcome(b []byte) (OutcomeRecord, error) {
	var o OutcomeRecord
	if len(b) > MaxEnvelopeBytes {
		return o, fmt.Errorf("decode outcome: %d bytes: %w", len(b), ErrMalformed)
	}
	if err := json.Unmarshal(b, &o); err != nil {
		return o, fmt.Errorf("decode outcome: %w: %v", ErrMalformed, err)
	}
	switch o.Outcome {
	case fsm.Accepted, fsm.Noop, fsm.Rejected, fsm.Stale:
	default:
		return o, fmt.Errorf("decode outcome: outcome %q: %w", o.Outcome, ErrMalformed)
	}
	// Ids the engine never writes: the read model could not even store
	// one longer than an index entry may be (a stall, not a refusal).
	if err := fsm.ValidateCommandID(o.CommandID); err != nil {
		return o, fmt.Errorf("decode outcome: %w: %v", ErrMalformed, err)
	}
	if o.Workspace != "" && fsm.ValidateID(o.Workspace) != nil {
		return o, fmt.Errorf("decode outcome: workspace %s: %w", QuoteInput(o.Workspace), ErrMalformed)
	}
	return o, nil
}
