package projector

import (
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/fsm"
)

// The fast path of decode: envelopes and outcome records in the form this
// build writes (encoding/json's output of events.Envelope and
// events.OutcomeRecord, members in any order, any whitespace) are read
// in one pass by a scanner that knows their shape, without reflection,
// and the payload and spec go to their jsonb columns as the JSON text they
// were read as, instead of being decoded and encoded again.
//
// The scanner accepts only documents the events package decodes to the
// same values, and whose payload and spec, as read, are equal as jsonb to
// what json.Marshal writes for them. It refuses (and decode takes the
// events package's path) whatever is off that path: a string with an
// escape or invalid UTF-8, null, a member out of the schema or twice, a
// key in another case, a member omitempty would drop (an empty string,
// map or zero number inside the payload or a spec), a number not written
// as Go writes it, a schema version other than the current one, anything
// the events package would refuse. TestScanMatchesCodec holds it to that.

// scanner reads one JSON document. Once bad, every method returns zero
// values and bad stays set.
type scanner struct {
	b   []byte // the document
	s   string // the same bytes, which strings are cut from: one copy per message
	i   int
	bad bool
}

func newScanner(b []byte) scanner { return scanner{b: b, s: string(b)} }

func (p *scanner) fail() { p.bad, p.i = true, len(p.b) }

func (p *scanner) space() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

// lit consumes the byte c after optional space.
func (p *scanner) lit(c byte) {
	p.space()
	if p.i < len(p.b) && p.b[p.i] == c {
		p.i++
		return
	}
	p.fail()
}

// end checks that only space follows.
func (p *scanner) end() {
	p.space()
	if p.i != len(p.b) {
		p.fail()
	}
}

// open consumes '{' and reports whether the object has a member.
func (p *scanner) open() bool {
	p.lit('{')
	p.space()
	if p.i < len(p.b) && p.b[p.i] == '}' {
		p.i++
		return false
	}
	return !p.bad
}

// next, after a member's value, reports whether another member follows.
func (p *scanner) next() bool {
	p.space()
	if p.i < len(p.b) {
		switch p.b[p.i] {
		case ',':
			p.i++
			return true
		case '}':
			p.i++
			return false
		}
	}
	p.fail()
	return false
}

// key reads a member's key and its colon.
func (p *scanner) key() string {
	k := p.str()
	p.lit(':')
	return k
}

// once sets bit in seen, failing if it was set: a member given twice.
func (p *scanner) once(seen *uint32, bit uint32) {
	if *seen&bit != 0 {
		p.fail()
	}
	*seen |= bit
}

// str reads a string without escapes.
func (p *scanner) str() string {
	p.lit('"')
	start, high := p.i, false
	for p.i < len(p.b) {
		c := p.b[p.i]
		switch {
		case c == '"':
			s := p.s[start:p.i]
			p.i++
			if high && !utf8.ValidString(s) {
				p.fail()
				return ""
			}
			return s
		case c == '\\' || c < 0x20:
			p.fail()
			return ""
		case c >= utf8.RuneSelf:
			high = true
		}
		p.i++
	}
	p.fail()
	return ""
}

// text reads a string that omitempty would keep: not empty.
func (p *scanner) text() string {
	s := p.str()
	if s == "" {
		p.fail()
	}
	return s
}

// digits reads an integer's digits as JSON has them (no leading zeros)
// and returns where they start.
func (p *scanner) digits() int {
	start := p.i
	for p.i < len(p.b) && p.b[p.i] >= '0' && p.b[p.i] <= '9' {
		p.i++
	}
	if n := p.i - start; n == 0 || (n > 1 && p.b[start] == '0') {
		p.fail()
	}
	return start
}

// uint reads an unsigned integer.
func (p *scanner) uint() uint64 {
	p.space()
	start := p.digits()
	if p.bad {
		return 0
	}
	if p.i-start > 19 {
		v, err := strconv.ParseUint(p.s[start:p.i], 10, 64)
		if err != nil {
			p.fail()
		}
		return v
	}
	var v uint64
	for _, c := range p.b[start:p.i] {
		v = v*10 + uint64(c-'0')
	}
	return v
}

// int reads a signed integer; not "-0", which Go writes as "0".
func (p *scanner) int() int64 {
	p.space()
	start := p.i
	if p.i < len(p.b) && p.b[p.i] == '-' {
		p.i++
	}
	digits := p.digits()
	if p.bad || (digits > start && p.b[digits] == '0') {
		p.fail()
		return 0
	}
	v, err := strconv.ParseInt(p.s[start:p.i], 10, 64)
	if err != nil {
		p.fail()
	}
	return v
}

// float reads a number written as encoding/json writes a float64 that
// omitempty keeps: not zero, in decimal notation, shortest form.
func (p *scanner) float() {
	p.space()
	start := p.i
	for p.i < len(p.b) {
		c := p.b[p.i]
		if (c < '0' || c > '9') && c != '-' && c != '.' {
			break
		}
		p.i++
	}
	lit := p.s[start:p.i]
	f, err := strconv.ParseFloat(lit, 64)
	if err != nil || f == 0 {
		p.fail()
		return
	}
	if abs := max(f, -f); abs < 1e-6 || abs >= 1e21 { // where encoding/json switches to exponents
		p.fail()
		return
	}
	var buf [32]byte
	if string(strconv.AppendFloat(buf[:0], f, 'f', -1, 64)) != lit {
		p.fail()
	}
}

// time reads a timestamp as time.Time's UnmarshalJSON does.
func (p *scanner) time() time.Time {
	p.space()
	start := p.i
	p.str()
	var t time.Time
	if !p.bad {
		if err := t.UnmarshalJSON(p.b[start:p.i]); err != nil {
			p.fail()
		}
	}
	return t
}

// strings reads a map of strings with at least one member.
func (p *scanner) strings() {
	if !p.open() {
		p.fail()
		return
	}
	for more := true; more; more = p.next() {
		p.key()
		p.str()
	}
}

// list reads null or an array of strings.
func (p *scanner) list() {
	p.space()
	if p.i+4 <= len(p.b) && p.s[p.i:p.i+4] == "null" {
		p.i += 4
		return
	}
	p.lit('[')
	p.space()
	if p.i < len(p.b) && p.b[p.i] == ']' {
		p.i++
		return
	}
	for !p.bad {
		p.str()
		p.space()
		if p.i < len(p.b) && p.b[p.i] == ',' {
			p.i++
			continue
		}
		p.lit(']')
		return
	}
}

// spec reads an fsm.Spec in the form json.Marshal writes it, and returns
// its image and its JSON text.
func (p *scanner) spec() (image, doc string) {
	p.space()
	start := p.i
	var seen uint32
	for more := p.open(); more; more = p.next() {
		switch p.key() {
		case "image":
			p.once(&seen, 1<<0)
			image = p.text()
		case "env":
			p.once(&seen, 1<<1)
			p.strings()
		case "cpus":
			p.once(&seen, 1<<2)
			p.float()
		case "memory_bytes":
			p.once(&seen, 1<<3)
			if p.int() == 0 {
				p.fail()
			}
		case "labels":
			p.once(&seen, 1<<4)
			p.strings()
		case "profile":
			p.once(&seen, 1<<5)
			p.text()
		default:
			p.fail()
		}
	}
	return image, p.s[start:p.i]
}

// payload reads an events.Payload in the form json.Marshal writes it into
// env, and returns its JSON text.
func (p *scanner) payload(env *events.Envelope) string {
	p.space()
	start := p.i
	var seen uint32
	for more := p.open(); more; more = p.next() {
		switch p.key() {
		case "spec":
			p.once(&seen, 1<<0)
			p.spec()
		case "reason":
			p.once(&seen, 1<<1)
			env.Payload.Reason = p.text()
		case "exit_code":
			p.once(&seen, 1<<2)
			v := p.int()
			if int64(int(v)) != v { // beyond int on 32 bits: the codec refuses it
				p.fail()
			}
			c := int(v)
			env.Payload.ExitCode = &c
		case "container_id":
			p.once(&seen, 1<<3)
			env.Payload.ContainerID = p.text()
		default:
			p.fail()
		}
	}
	return p.s[start:p.i]
}

// state reads an fsm.Workspace into w, but for its spec, of which it
// returns the JSON text after setting w's image.
func (p *scanner) state(w *fsm.Workspace) string {
	spec := "{}" // what json.Marshal writes for a zero spec
	var seen uint32
	for more := p.open(); more; more = p.next() {
		switch p.key() {
		case "id":
			p.once(&seen, 1<<0)
			w.ID = p.str()
		case "status":
			p.once(&seen, 1<<1)
			w.Status = fsm.Status(p.str())
		case "generation":
			p.once(&seen, 1<<2)
			w.Generation = p.uint()
		case "spec_version":
			p.once(&seen, 1<<3)
			w.SpecVersion = p.uint()
		case "spec":
			p.once(&seen, 1<<4)
			w.Spec.Image, spec = p.spec()
		case "attempt_spec_version":
			p.once(&seen, 1<<5)
			w.AttemptSpecVersion = p.uint()
		case "container_id":
			p.once(&seen, 1<<6)
			w.ContainerID = p.str()
		case "last_error":
			p.once(&seen, 1<<7)
			w.LastError = p.str()
		case "seq":
			p.once(&seen, 1<<8)
			w.Seq = p.uint()
		default:
			p.fail()
		}
	}
	return spec
}

// scanEvent is the fast path of an event's decoding; false means take the
// events package's.
func scanEvent(seq uint64, b []byte) (eventFacts, bool) {
	if len(b) > events.MaxEnvelopeBytes {
		return eventFacts{}, false
	}
	p := newScanner(b)
	env := events.Envelope{StreamSeq: seq}
	payload, spec := "{}", "{}" // what json.Marshal writes for zero values
	schema := int64(0)
	var seen uint32
	for more := p.open(); more; more = p.next() {
		switch p.key() {
		case "id":
			p.once(&seen, 1<<0)
			env.ID = p.str()
		case "workspace":
			p.once(&seen, 1<<1)
			env.Workspace = p.str()
		case "seq":
			p.once(&seen, 1<<2)
			env.Seq = p.uint()
		case "type":
			p.once(&seen, 1<<3)
			env.Type = fsm.EventType(p.str())
		case "schema_version":
			p.once(&seen, 1<<4)
			schema = p.int()
		case "generation":
			p.once(&seen, 1<<5)
			env.Generation = p.uint()
		case "spec_version":
			p.once(&seen, 1<<6)
			env.SpecVersion = p.uint()
		case "time":
			p.once(&seen, 1<<7)
			env.Time = p.time()
		case "command_id":
			p.once(&seen, 1<<8)
			env.CommandID = p.str()
		case "actor":
			p.once(&seen, 1<<9)
			env.Actor = p.str()
		case "payload":
			p.once(&seen, 1<<10)
			payload = p.payload(&env)
		case "state":
			p.once(&seen, 1<<11)
			spec = p.state(&env.State)
		default:
			p.fail()
		}
	}
	p.end()
	// What events.Codec checks beyond JSON (validateDecoded).
	if p.bad || schema != events.SchemaVersion || !env.Type.Known() || env.Seq == 0 || env.Generation == 0 ||
		fsm.ValidateID(env.Workspace) != nil || !env.State.Status.Known() {
		return eventFacts{}, false
	}
	f, err := factsOf(&env, payload, spec)
	return f, err == nil
}

// scanOutcome is the fast path of an outcome record's decoding; false
// means take the events package's.
func scanOutcome(seq uint64, b []byte) (commandRow, bool) {
	if len(b) > events.MaxEnvelopeBytes {
		return commandRow{}, false
	}
	p := newScanner(b)
	var o events.OutcomeRecord
	var rej fsm.Rejection
	var seen uint32
	for more := p.open(); more; more = p.next() {
		switch p.key() {
		case "command_id":
			p.once(&seen, 1<<0)
			o.CommandID = p.str()
		case "workspace":
			p.once(&seen, 1<<1)
			o.Workspace = p.str()
		case "command_type":
			p.once(&seen, 1<<2)
			o.CommandType = fsm.CommandType(p.str())
		case "actor":
			p.once(&seen, 1<<3)
			o.Actor = p.str()
		case "outcome":
			p.once(&seen, 1<<4)
			o.Outcome = fsm.Outcome(p.str())
		case "event_seq":
			p.once(&seen, 1<<5)
			o.EventSeq = p.uint()
		case "generation":
			p.once(&seen, 1<<6)
			o.Generation = p.uint()
		case "state":
			p.once(&seen, 1<<7)
			o.State = fsm.Status(p.str())
		case "command_generation":
			p.once(&seen, 1<<8)
			o.CommandGeneration = p.uint()
		case "rejection":
			p.once(&seen, 1<<9)
			p.rejection(&rej)
			o.Rejection = &rej
		case "reason":
			p.once(&seen, 1<<10)
			o.Reason = p.str()
		case "received_at":
			p.once(&seen, 1<<11)
			o.ReceivedAt = p.time()
		case "decided_at":
			p.once(&seen, 1<<12)
			o.DecidedAt = p.time()
		default:
			p.fail()
		}
	}
	p.end()
	switch o.Outcome { // what events.DecodeOutcome checks beyond JSON
	case fsm.Accepted, fsm.Noop, fsm.Rejected, fsm.Stale:
	default:
		return commandRow{}, false
	}
	if p.bad || fsm.ValidateCommandID(o.CommandID) != nil || (o.Workspace != "" && fsm.ValidateID(o.Workspace) != nil) {
		return commandRow{}, false
	}
	return outcomeRow(seq, o), true
}

// rejection reads an fsm.Rejection but for its allowed commands, which
// no row holds.
func (p *scanner) rejection(r *fsm.Rejection) {
	var seen uint32
	for more := p.open(); more; more = p.next() {
		switch p.key() {
		case "code":
			p.once(&seen, 1<<0)
			r.Code = fsm.Code(p.str())
		case "command":
			p.once(&seen, 1<<1)
			r.Command = fsm.CommandType(p.str())
		case "state":
			p.once(&seen, 1<<2)
			r.State = fsm.Status(p.str())
		case "generation":
			p.once(&seen, 1<<3)
			r.Generation = p.uint()
		case "spec_version":
			p.once(&seen, 1<<4)
			r.SpecVersion = p.uint()
		case "allowed":
			p.once(&seen, 1<<5)
			p.list()
		case "message":
			p.once(&seen, 1<<6)
			r.Message = p.str()
		default:
			p.fail()
		}
	}
}
