package projector

import (
	"bytes"
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
	SpecJSON                         string   // or, when not empty, Spec's JSON as read from the stream
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

// message is one decoded stream message: an event, an outcome, or one
// that no reader can use, which is quarantined (a dead letter).
type message struct {
	seq     uint64
	time    time.Time // stream time
	pending uint64
	// skipped is how many stream sequences before this one the stream no
	// longer held (expired outcomes).
	skipped uint64
	event   *eventFacts
	outcome *commandRow
	dead    *events.Unreadable
}

// deadLetterRow is a quarantined message as the dead_letters table keeps
// it: enough to see what it was, not all of it.
type deadLetterRow struct {
	StreamSeq int64
	Subject   string
	Reason    string
	Error     string
	Size      int64
	Data      []byte // the first maxDeadLetterData bytes
	Time      time.Time
}

// maxDeadLetterData bounds the bytes of a quarantined message kept: enough
// to recognize it, and a flood of large ones cannot grow the read model
// much.
const maxDeadLetterData = 4096

func deadLetterOf(u *events.Unreadable) deadLetterRow {
	data := u.Data[:min(len(u.Data), maxDeadLetterData)]
	return deadLetterRow{StreamSeq: int64(u.StreamSeq), Subject: storable(strings.ToValidUTF8(u.Subject, "\uFFFD")),
		Reason: events.ReasonOf(u), Error: storable(strings.ToValidUTF8(u.Err.Error(), "\uFFFD")),
		Size: int64(len(u.Data)), Data: bytes.Clone(data), Time: u.Time}
}

// eventFacts is what the read model takes from one event: its row, less
// from_status, and the workspace row it produces, as if it were the
// workspace's first event. fold adds what depends on the rows before.
type eventFacts struct {
	row     eventRow
	state   workspaceRow
	created bool // a workspace.created event, which restarts created_at
}

// decoder turns stream messages into read-model input.
type decoder struct {
	names events.Names
	codec events.Codec
	slow  bool // no fast path: for tests that compare the two
}

// decode classifies by subject. A subject of neither kind yields a message
// with none set: it still advances the checkpoint. A message that cannot
// be used (events.Unreadable) is quarantined: it comes back as a dead
// letter, which also advances the checkpoint, so it never stalls the
// projector.
func (d decoder) decode(seq uint64, subject string, data []byte, stored time.Time) message {
	m := message{seq: seq, time: stored}
	var err error
	switch {
	case d.names.IsEvent(subject):
		var f eventFacts
		if f, err = d.event(seq, subject, data); err == nil {
			m.event = &f
		}
	case d.isOutcome(subject):
		var r commandRow
		if r, err = d.outcome(seq, subject, data); err == nil {
			m.outcome = &r
		}
	}
	if err != nil {
		m.dead = &events.Unreadable{StreamSeq: seq, Subject: subject, Time: stored, Data: data, Err: err}
	}
	return m
}

func (d decoder) isOutcome(subject string) bool {
	return strings.HasPrefix(subject, d.names.Prefix+".out.")
}

// event decodes an envelope read at stream sequence seq. Envelopes in the
// form this build writes take the fast path (wire.go); anything else,
// including every envelope the fast path would refuse, is decoded by the
// events package, which also says what is wrong with it.
//
// An envelope of another workspace than its subject names is refused
// (events.ErrMisaddressed), as every reader of the stream refuses it.
func (d decoder) event(seq uint64, subject string, data []byte) (eventFacts, error) {
	if f, ok := scanEvent(seq, data); ok && !d.slow {
		if err := d.names.CheckEvent(subject, f.row.Workspace); err != nil {
			return eventFacts{}, err
		}
		return f, nil
	}
	env, err := d.names.DecodeEventOn(d.codec, subject, data)
	if err != nil {
		return eventFacts{}, err
	}
	env.StreamSeq = seq
	return factsOf(&env, "", "")
}

// outcome decodes an outcome record as event does an envelope.
func (d decoder) outcome(seq uint64, subject string, data []byte) (commandRow, error) {
	if r, ok := scanOutcome(seq, data); ok && !d.slow {
		if err := d.names.CheckOutcome(subject, r.CommandID); err != nil {
			return commandRow{}, err
		}
		return r, nil
	}
	o, err := d.names.DecodeOutcomeOn(subject, data)
	if err != nil {
		return commandRow{}, err
	}
	return outcomeRow(seq, o), nil
}

func outcomeRow(seq uint64, o events.OutcomeRecord) commandRow {
	o.CommandID, o.Actor, o.Reason = storable(o.CommandID), storable(o.Actor), storable(o.Reason)
	if o.Rejection != nil {
		rej := *o.Rejection
		rej.Code, rej.Message = fsm.Code(storable(string(rej.Code))), storable(rej.Message)
		o.Rejection = &rej
	}
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
	// Outcome records are checked less than envelopes: any member may
	// carry a NUL.
	r.Workspace, r.Type, r.Outcome, r.State = storable(r.Workspace), storable(r.Type), storable(r.Outcome), storable(r.State)
	return r
}

// factsOf maps an envelope read at env.StreamSeq to its facts. payload and
// spec, when not empty, are the JSON documents of env.Payload and
// env.State.Spec as read from the stream, and env need not hold those
// decoded (but for the spec's image); when empty, they are marshalled from
// env (the spec only when the row is written).
func factsOf(env *events.Envelope, payload, spec string) (eventFacts, error) {
	if payload == "" {
		b, err := json.Marshal(env.Payload)
		if err != nil {
			return eventFacts{}, fmt.Errorf("stream seq %d: payload: %w", env.StreamSeq, err)
		}
		payload = string(b)
	}
	payload, spec = storableJSON(payload), storableJSON(spec)
	env.ID, env.CommandID, env.Actor = storable(env.ID), storable(env.CommandID), storable(env.Actor)
	env.Payload.Reason = storable(env.Payload.Reason)
	st := env.State
	st.Status = fsm.Status(storable(string(st.Status))) // not checked by the codec
	st.ContainerID, st.LastError, st.Spec.Image = storable(st.ContainerID), storable(st.LastError), storable(st.Spec.Image)
	t := env.Time
	f := eventFacts{created: env.Type == fsm.Created}
	f.state = workspaceRow{
		ID: env.Workspace, Status: st.Status.String(), Generation: int64(st.Generation),
		SpecVersion: int64(st.SpecVersion), Attempt: int64(st.AttemptSpecVersion), Spec: st.Spec, SpecJSON: spec,
		Image: st.Spec.Image, ContainerID: nullString(st.ContainerID), LastError: nullString(st.LastError), LastEventSeq: int64(env.Seq),
		LastStreamSeq: int64(env.StreamSeq), CreatedAt: t, UpdatedAt: t, ChangedAt: t,
	}
	if spec != "" {
		f.state.Spec = fsm.Spec{}
	}
	f.row = eventRow{
		StreamSeq: int64(env.StreamSeq), EventID: env.ID, Workspace: env.Workspace, Seq: int64(env.Seq),
		Type: string(env.Type), Generation: int64(env.Generation), SpecVersion: int64(env.SpecVersion),
		ToStatus: f.state.Status, Reason: nullString(env.Payload.Reason), Payload: payload,
		CommandID: env.CommandID, Actor: nullString(env.Actor), Time: t,
	}
	if env.Payload.ExitCode != nil {
		c := int32(*env.Payload.ExitCode)
		f.row.ExitCode = &c
	}
	return f, nil
}

// fold applies an event to the workspace's previous row (nil: none yet)
// and returns the new row and the event's row.
func fold(prev *workspaceRow, f *eventFacts) (workspaceRow, eventRow) {
	w, e := f.state, f.row
	e.FromStatus = fsm.None.String()
	if prev != nil {
		e.FromStatus = prev.Status
		if !f.created {
			w.CreatedAt = prev.CreatedAt
		}
		if prev.Status == w.Status {
			w.ChangedAt = prev.ChangedAt
		}
	}
	if w.Status == string(fsm.Deleted) {
		d := w.ChangedAt
		w.DeletedAt = &d
	}
	return w, e
}

// owned returns r with its strings copied out of the message they may
// have been cut from (the fast decoder's strings share the message's
// memory): a row kept across messages, in the fold's cache or a
// rebuild's workspaces, must not keep its whole message alive.
func (r workspaceRow) owned() workspaceRow {
	r.ID, r.Status, r.SpecJSON, r.Image = strings.Clone(r.ID), strings.Clone(r.Status), strings.Clone(r.SpecJSON), strings.Clone(r.Image)
	r.ContainerID, r.LastError = cloneNull(r.ContainerID), cloneNull(r.LastError)
	return r
}

func cloneNull(s *string) *string {
	if s == nil {
		return nil
	}
	c := strings.Clone(*s)
	return &c
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
	if r.SpecJSON != "" {
		return r.SpecJSON, nil
	}
	b, err := json.Marshal(r.Spec)
	if err != nil {
		return "", fmt.Errorf("workspace %s: spec: %w", r.ID, err)
	}
	return storableJSON(string(b)), nil
}

// storable replaces the one character PostgreSQL's text cannot hold, NUL,
// with U+FFFD. The engine stores what a command carried, NUL included
// (JSON "\u0000"), and a row the database refuses would stall the
// projector for every workspace.
func storable(s string) string {
	if strings.IndexByte(s, 0) < 0 {
		return s
	}
	return strings.ReplaceAll(s, "\x00", "\uFFFD")
}

// storableJSON is storable for a JSON document, which jsonb refuses with
// a "\u0000" escape in any string: it becomes "\ufffd".
func storableJSON(s string) string {
	if !strings.Contains(s, `\u0000`) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		switch {
		case s[i] != '\\' || i+1 == len(s):
			b.WriteByte(s[i])
		case strings.HasPrefix(s[i:], `\u0000`):
			b.WriteString(`\ufffd`)
			i += len(`\u0000`) - 1
		default: // any other escape, \\ included, passes whole
			b.WriteString(s[i : i+2])
			i++
		}
	}
	return b.String()
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
