package events

import (
	"encoding/json"
	"strconv"
	"unicode/utf8"

	"github.com/turnstile-dev/turnstile/fsm"
)

// The fast path of DecodeCommand: one pass over the bytes, written for
// fsm.Command alone, that recognises the commands the strict decoder
// (decodeCommandStrict) accepts and produces the same fsm.Command for
// them. It never refuses: anything it does not take whole (a syntax
// error, a key that is not exactly a field's name, a key given twice, a
// value of another type, trailing data, a failed check) goes to the
// strict decoder, which says what is wrong exactly as before, so every
// refusal keeps its message. What the fast path takes must be what the
// strict decoder accepts, read the same: FuzzDecodeCommandFast holds the
// two paths to the same results.

// fastEncodeBound is the input size up to which an accepted command's
// canonical encoding is known to fit MaxCommandBytes without encoding it:
// re-encoding turns one input byte into at most six ('<' becomes \u003c;
// an invalid UTF-8 byte becomes U+FFFD, three bytes, and a valid U+2028,
// three bytes, becomes six), drops whitespace, nulls and escapes, and
// writes the required id, type and workspace, which Validate has made sure
// the input holds. The one value that can grow past six times is cpus (a
// one-byte "1" against at most 25 bytes for any float in its valid range),
// hence the slack.
const fastEncodeBound = (MaxCommandBytes - 64) / 6

// decodeCommandFast returns the command DecodeCommand(b, subject) would
// return and true, or false if b needs the strict decoder.
func decodeCommandFast(b []byte, subject string) (fsm.Command, bool) {
	var c fsm.Command
	if len(b) > MaxCommandBytes {
		return c, false
	}
	d := cmdScanner{s: b}
	if !d.command(&c) {
		return fsm.Command{}, false
	}
	if subject != "" && c.Workspace != subject {
		return fsm.Command{}, false
	}
	if err := c.Validate(); err != nil {
		return fsm.Command{}, false
	}
	if len(b) > fastEncodeBound {
		if _, err := EncodeCommand(c); err != nil {
			return fsm.Command{}, false
		}
	}
	return c, true
}

// cmdScanner reads one fsm.Command from s; every method returns false at
// the first byte it does not take, and the caller gives up.
type cmdScanner struct {
	s []byte
	i int
}

// Top-level and spec fields, as bits of a seen-set.
const (
	fID = 1 << iota
	fType
	fWorkspace
	fActor
	fSpec
	fGeneration
	fReason
	fExitCode
	fContainerID
)

const (
	sImage = 1 << iota
	sEnv
	sCPUs
	sMemory
	sLabels
	sProfile
)

// command reads the whole input: one object and nothing after it but
// JSON whitespace.
func (d *cmdScanner) command(c *fsm.Command) bool {
	d.ws()
	if !d.eat('{') {
		return false
	}
	seen := 0
	ok := d.members(func(key []byte) bool {
		var bit int
		switch string(key) {
		case "id":
			bit = fID
		case "type":
			bit = fType
		case "workspace":
			bit = fWorkspace
		case "actor":
			bit = fActor
		case "spec":
			bit = fSpec
		case "generation":
			bit = fGeneration
		case "reason":
			bit = fReason
		case "exit_code":
			bit = fExitCode
		case "container_id":
			bit = fContainerID
		default:
			return false // unknown, or a field's name in another case
		}
		if seen&bit != 0 {
			return false
		}
		seen |= bit
		switch bit {
		case fID:
			return d.stringOrNull(&c.ID)
		case fType:
			var t string
			ok := d.stringOrNull(&t)
			c.Type = fsm.CommandType(t)
			return ok
		case fWorkspace:
			return d.stringOrNull(&c.Workspace)
		case fActor:
			return d.stringOrNull(&c.Actor)
		case fReason:
			return d.stringOrNull(&c.Reason)
		case fContainerID:
			return d.stringOrNull(&c.ContainerID)
		case fGeneration:
			if d.null() {
				return true
			}
			n, ok := d.number()
			if !ok {
				return false
			}
			g, err := strconv.ParseUint(string(n), 10, 64)
			c.Generation = g
			return err == nil
		case fExitCode:
			if d.null() {
				return true
			}
			n, ok := d.number()
			if !ok {
				return false
			}
			v, err := strconv.ParseInt(string(n), 10, strconv.IntSize)
			x := int(v)
			c.ExitCode = &x
			return err == nil
		default: // fSpec
			if d.null() {
				return true
			}
			c.Spec = new(fsm.Spec)
			return d.spec(c.Spec)
		}
	})
	if !ok {
		return false
	}
	d.ws()
	return d.i == len(d.s)
}

// spec reads a spec object.
func (d *cmdScanner) spec(s *fsm.Spec) bool {
	if !d.eat('{') {
		return false
	}
	seen := 0
	return d.members(func(key []byte) bool {
		var bit int
		switch string(key) {
		case "image":
			bit = sImage
		case "env":
			bit = sEnv
		case "cpus":
			bit = sCPUs
		case "memory_bytes":
			bit = sMemory
		case "labels":
			bit = sLabels
		case "profile":
			bit = sProfile
		default:
			return false
		}
		if seen&bit != 0 {
			return false
		}
		seen |= bit
		switch bit {
		case sImage:
			return d.stringOrNull(&s.Image)
		case sProfile:
			return d.stringOrNull(&s.Profile)
		case sEnv:
			return d.stringMap(&s.Env)
		case sLabels:
			return d.stringMap(&s.Labels)
		case sCPUs:
			if d.null() {
				return true
			}
			n, ok := d.number()
			if !ok {
				return false
			}
			f, err := strconv.ParseFloat(string(n), 64)
			s.CPUs = f
			return err == nil
		default: // sMemory
			if d.null() {
				return true
			}
			n, ok := d.number()
			if !ok {
				return false
			}
			v, err := strconv.ParseInt(string(n), 10, 64)
			s.MemoryBytes = v
			return err == nil
		}
	})
}

// stringMap reads an object of strings, or null; encoding/json makes an
// empty map of {} and stores "" for a null value.
func (d *cmdScanner) stringMap(m *map[string]string) bool {
	if d.null() {
		return true
	}
	if !d.eat('{') {
		return false
	}
	out := make(map[string]string)
	*m = out
	return d.members(func(key []byte) bool {
		if _, dup := out[string(key)]; dup {
			return false
		}
		var v string
		if !d.stringOrNull(&v) {
			return false
		}
		out[string(key)] = v
		return true
	})
}

// members reads an object's members after its '{' through its '}',
// calling value with each key once the scanner stands at the value.
func (d *cmdScanner) members(value func(key []byte) bool) bool {
	d.ws()
	if d.eat('}') {
		return true
	}
	for {
		key, ok := d.raw()
		if !ok {
			return false
		}
		d.ws()
		if !d.eat(':') {
			return false
		}
		d.ws()
		if !value(key) {
			return false
		}
		d.ws()
		if d.eat('}') {
			return true
		}
		if !d.eat(',') {
			return false
		}
		d.ws()
	}
}

// ws skips JSON whitespace.
func (d *cmdScanner) ws() {
	for d.i < len(d.s) {
		switch d.s[d.i] {
		case ' ', '\t', '\r', '\n':
			d.i++
		default:
			return
		}
	}
}

// eat takes c if it is next.
func (d *cmdScanner) eat(c byte) bool {
	if d.i < len(d.s) && d.s[d.i] == c {
		d.i++
		return true
	}
	return false
}

// null takes a null literal if one is next.
func (d *cmdScanner) null() bool {
	if len(d.s)-d.i >= 4 && string(d.s[d.i:d.i+4]) == "null" {
		d.i += 4
		return true
	}
	return false
}

// stringOrNull reads a string into v; null leaves v as it is, as
// encoding/json does for a string.
func (d *cmdScanner) stringOrNull(v *string) bool {
	if d.null() {
		return true
	}
	s, ok := d.str()
	*v = s
	return ok
}

// str reads a JSON string into a string of its own: the command may
// outlive the input by long (its spec in the engine's cached state), and
// must not keep all of it alive.
func (d *cmdScanner) str() (string, bool) {
	v, ok := d.raw()
	return string(v), ok
}

// raw reads a JSON string. Plain ASCII and valid UTF-8 without escapes
// are slices of the input, as encoding/json would copy them; a string
// with escapes or invalid UTF-8 is handed to encoding/json itself, so
// that surrogates and replacement characters come out exactly as the
// strict decoder makes them.
func (d *cmdScanner) raw() ([]byte, bool) {
	if !d.eat('"') {
		return nil, false
	}
	start := d.i
	escaped, wide := false, false
	for d.i < len(d.s) {
		c := d.s[d.i]
		switch {
		case c == '"':
			d.i++
			body := d.s[start : d.i-1]
			if escaped || (wide && !utf8.Valid(body)) {
				var v string
				if err := json.Unmarshal(d.s[start-1:d.i], &v); err != nil {
					return nil, false
				}
				return []byte(v), true
			}
			return body, true
		case c < 0x20:
			return nil, false
		case c == '\\':
			escaped = true
			d.i++
			if d.i >= len(d.s) {
				return nil, false
			}
			switch d.s[d.i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				d.i++
			case 'u':
				if len(d.s)-d.i < 5 {
					return nil, false
				}
				for _, h := range d.s[d.i+1 : d.i+5] {
					if !isHex(h) {
						return nil, false
					}
				}
				d.i += 5
			default:
				return nil, false
			}
		case c >= utf8.RuneSelf:
			wide = true
			d.i++
		default:
			d.i++
		}
	}
	return nil, false
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// number reads a JSON number and returns its text; the caller parses it
// with the strconv function encoding/json uses for the field's type.
func (d *cmdScanner) number() ([]byte, bool) {
	start := d.i
	d.eat('-')
	switch {
	case d.eat('0'):
	case d.i < len(d.s) && '1' <= d.s[d.i] && d.s[d.i] <= '9':
		d.digits()
	default:
		return nil, false
	}
	if d.eat('.') && !d.digits() {
		return nil, false
	}
	if d.eat('e') || d.eat('E') {
		if !d.eat('+') {
			d.eat('-')
		}
		if !d.digits() {
			return nil, false
		}
	}
	return d.s[start:d.i], true
}

// digits takes one or more decimal digits.
func (d *cmdScanner) digits() bool {
	start := d.i
	for d.i < len(d.s) && '0' <= d.s[d.i] && d.s[d.i] <= '9' {
		d.i++
	}
	return d.i > start
}
