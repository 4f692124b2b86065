package projector

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/fsm"
)

// The rows of the read model as the projector writes them. Both the
// incremental path and the rebuild build them with the same functions, so
// the two cannot disagree.

type workspaceRow struct {
	ID                               string
	Status                           string
	Generation, SpecVersion, Attempt int64
	Spec                             fsm.Spec // marshalled when written: a fold overwrites most rows
	Image                            string
	ContainerID                      *string
	LastError                        *string
	LastEventSeq, LastStreamSeq      int64
	CreatedAt, UpdatedAt, ChangedAt  time.Time
	DeletedAt                        *time.Time
}

type eventRow struct {
	StreamSeq               int64
	EventID, Workspace      string
	Seq                     int64
	Type                    string
	Generation, SpecVersion int64
	FromStatus, ToStatus    string
	Reason                  *string
	ExitCode                *int32
	Payload                 string // JSON
	CommandID               string
	Actor                   *string
	Time                    time.Time
}

type commandRow struct {
	CommandID, Workspace, Type  string
	Actor                       *string
	ReceivedAt, DecidedAt       time.Time
	Outcome                     string
	RejectionCode, RejectionMsg *string
	Reason                      *string
	// EventStreamSeq locates the recorded event. Outcome records name it
	// by workspace and event seq only; the writers resolve it.
	EventStreamSeq, EventSeq *int64
	Generation               int64
	CommandGeneration        *int64
	State                    string
	OutcomeStreamSeq         int64
}

// message is one decoded stream message: an event or an outcome.
type message struct {
	seq     uint64
	time    time.Time // stream time
	pending uint64
	event   *events.Envelope
	outcome *commandRow
}

// decoder turns stream messages into read-model input.
type decoder struct {
	names events.Names
	codec events.Codec
}

// decode classifies by subject. A subject of neither kind yields a message
// with neither set: it still advances the checkpoint.
func (d decoder) decode(seq uint64, subject string, data []byte) (message, error) {
	m := message{seq: seq}
	switch {
	case d.names.IsEvent(subject):
		env, err := d.codec.Decode(data)
		if err != nil {
			return m, fmt.Errorf("stream seq %d (%s): %w", seq, subject, err)
		}
		env.StreamSeq = seq
		m.event = &env
	case strings.HasPrefix(subject, d.names.Prefix+".out."):
		o, err := events.DecodeOutcome(data)
		if err != nil {
			return m, fmt.Errorf("stream seq %d (%s): %w", seq, subject, err)
		}
		r := outcomeRow(seq, o)
		m.outcome = &r
	}
	return m, nil
}

func outcomeRow(seq uint64, o events.OutcomeRecord) commandRow {
	r := commandRow{
		CommandID: o.CommandID, Workspace: o.Workspace, Type: string(o.CommandType), Actor: nullString(o.Actor),
		ReceivedAt: o.ReceivedAt, DecidedAt: o.DecidedAt, Outcome: string(o.Outcome), Reason: nullString(o.Reason),
		EventSeq: nullInt(o.EventSeq), Generation: int64(o.Generation),
		CommandGeneration: nullInt(o.CommandGeneration), State: o.State.String(), OutcomeStreamSeq: int64(seq),
	}
	if o.Rejection != nil {
		r.RejectionCode = nullString(string(o.Rejection.Code))
		r.RejectionMsg = nullString(o.Rejection.Message)
	}
	return r
}

// fold applies env to the workspace's previous row (nil: none yet) and
// returns the new row and the event's row.
func fold(prev *workspaceRow, env *events.Envelope) (workspaceRow, eventRow, error) {
	st := env.State
	payload, err := json.Marshal(env.Payload)
	if err != nil {
		return workspaceRow{}, eventRow{}, fmt.Errorf("stream seq %d: payload: %w", env.StreamSeq, err)
	}
	t := env.Time
	w := workspaceRow{
		ID: env.Workspace, Status: st.Status.String(), Generation: int64(st.Generation),
		SpecVersion: int64(st.SpecVersion), Attempt: int64(st.AttemptSpecVersion), Spec: st.Spec,
		Image: st.Spec.Image, ContainerID: nullString(st.ContainerID), LastError: nullString(st.LastError), LastEventSeq: int64(env.Seq),
		LastStreamSeq: int64(env.StreamSeq), CreatedAt: t, UpdatedAt: t, ChangedAt: t,
	}
	from := fsm.None.String()
	if prev != nil {
		from = prev.Status
		if env.Type != fsm.Created {
			w.CreatedAt = prev.CreatedAt
		}
		if prev.Status == w.Status {
			w.ChangedAt = prev.ChangedAt
		}
	}
	if st.Status == fsm.Deleted {
		d := w.ChangedAt
		w.DeletedAt = &d
	}
	e := eventRow{
		StreamSeq: int64(env.StreamSeq), EventID: env.ID, Workspace: env.Workspace, Seq: int64(env.Seq),
		Type: string(env.Type), Generation: int64(env.Generation), SpecVersion: int64(env.SpecVersion),
		FromStatus: from, ToStatus: w.Status, Reason: nullString(env.Payload.Reason), Payload: string(payload),
		CommandID: env.CommandID, Actor: nullString(env.Actor), Time: t,
	}
	if env.Payload.ExitCode != nil {
		c := int32(*env.Payload.ExitCode)
		e.ExitCode = &c
	}
	return w, e, nil
}

func nullString(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func nullInt(v uint64) *int64 {
	if v == 0 {
		return nil
	}
	i := int64(v)
	return &i
}

// specJSON is the spec as the workspaces.spec column holds it.
func specJSON(r *workspaceRow) (string, error) {
	b, err := json.Marshal(r.Spec)
	if err != nil {
		return "", fmt.Errorf("workspace %s: spec: %w", r.ID, err)
	}
	return string(b), nil
}

// resolveEvent fills in the stream sequence of the event an accepted
// command recorded when it is the workspace's newest, as it is whenever
// the event and its outcome are appended together. The writers resolve the
// rare other case in SQL.
func resolveEvent(latest *workspaceRow, r commandRow) commandRow {
	if latest != nil && r.EventSeq != nil && *r.EventSeq == latest.LastEventSeq {
		s := latest.LastStreamSeq
		r.EventStreamSeq = &s
	}
	return r
}
