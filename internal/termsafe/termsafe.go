package termsafe

import (
	"io"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"
)

// Unsafe reports whether r must not reach a terminal raw: a control
// character (C0, DEL, C1: ESC starts CSI and OSC sequences, U+009B is CSI
// itself on terminals that take C1 controls), a format character (Cf: the
// bidi controls U+202A-U+202E and U+2066-U+2069, which reorder the rest of
// a line, zero-width spaces and joiners, the BOM) or a line or paragraph
// separator (U+2028, U+2029).
func Unsafe(r rune) bool {
	return r < 0x20 || r >= 0x7f && r <= 0x9f || r >= 0x80 && unicode.In(r, unicode.Cf, unicode.Zl, unicode.Zp)
}

// Text is s for a terminal: each Unsafe character written as Go would
// quote it (\x1b, \n, \u202e) and an invalid byte as U+FFFD.
func Text(s string) string {
	if !strings.ContainsFunc(s, Unsafe) && utf8.ValidString(s) {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		if Unsafe(r) {
			q := strconv.QuoteRune(r)
			b.WriteString(q[1 : len(q)-1])
			continue
		}
		b.WriteRune(r) // an invalid byte came as utf8.RuneError: U+FFFD
	}
	return b.String()
}

// JSON returns b, a JSON document as encoding/json writes it, with every
// Unsafe character that encoding/json leaves as it is (DEL, C1, format
// characters) written as a \u escape: the same value to a decoder, inert
// on a terminal (curl, -o json, a log viewer). Outside strings a JSON
// document is ASCII without DEL, so only strings change. b is returned
// itself when nothing needs escaping, which is the common case.
func JSON(b []byte) []byte {
	i := firstUnsafe(b)
	if i < 0 {
		return b
	}
	out := make([]byte, 0, len(b)+16)
	out = append(out, b[:i]...)
	for i < len(b) {
		r, n := utf8.DecodeRune(b[i:])
		if r < 0x20 || !Unsafe(r) || r == utf8.RuneError && n == 1 {
			// C0 is escaped by encoding/json already; an invalid byte
			// (not from encoding/json) is left as it is.
			out = append(out, b[i:i+n]...)
			i += n
			continue
		}
		if r > 0xffff {
			r1, r2 := utf16.EncodeRune(r)
			out = appendU(appendU(out, r1), r2)
		} else {
			out = appendU(out, r)
		}
		i += n
	}
	return out
}

// firstUnsafe is the index of the first byte of b that may start an
// Unsafe character above C0, or -1.
func firstUnsafe(b []byte) int {
	for i, c := range b {
		if c < 0x7f {
			continue
		}
		if c == 0x7f {
			return i
		}
		if utf8.RuneStart(c) {
			if r, _ := utf8.DecodeRune(b[i:]); Unsafe(r) {
				return i
			}
		}
	}
	return -1
}

func appendU(b []byte, r rune) []byte {
	const hex = "0123456789abcdef"
	return append(b, '\\', 'u', hex[r>>12&0xf], hex[r>>8&0xf], hex[r>>4&0xf], hex[r&0xf])
}

// Writer is w with JSON applied to each Write. It is for writers that
// write whole JSON documents or lines in one Write each, as
// json.Encoder.Encode and slog's JSON handler do (a character split
// across two writes would pass unescaped). Write reports len(p) on
// success, whatever it wrote.
func Writer(w io.Writer) io.Writer { return jsonWriter{w} }

type jsonWriter struct{ w io.Writer }

func (j jsonWriter) Write(p []byte) (int, error) {
	if _, err := j.w.Write(JSON(p)); err != nil {
		return 0, err
	}
	return len(p), nil
}
