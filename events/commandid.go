package events

import (
	"encoding/hex"
	"time"
)

// IDTime returns the time a command id carries, if it is a UUIDv7 in its
// canonical form (8-4-4-4-12 hex digits, either case): the Unix
// milliseconds of its first 48 bits. Other ids carry no time (ok false).
//
// The engine uses it to tell a command id that cannot have been used
// before the duplicate window from one that may have been
// (engine.Engine's "unseen" commands skip the outcome check).
func IDTime(id string) (t time.Time, ok bool) {
	if len(id) != 36 || id[8] != '-' || id[13] != '-' || id[18] != '-' || id[23] != '-' {
		return time.Time{}, false
	}
	var b [16]byte
	j := 0
	for _, part := range [...]string{id[0:8], id[9:13], id[14:18], id[19:23], id[24:36]} {
		n, err := hex.Decode(b[j:], []byte(part))
		if err != nil {
			return time.Time{}, false
		}
		j += n
	}
	// Version 7, RFC 9562 variant (10xx).
	if b[6]>>4 != 7 || b[8]>>6 != 2 {
		return time.Time{}, false
	}
	var ms int64
	for _, c := range b[:6] {
		ms = ms<<8 | int64(c)
	}
	return time.UnixMilli(ms), true
}
