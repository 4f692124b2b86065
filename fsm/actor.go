package fsm

import (
	"strings"
	"unicode"

	"golang.org/x/text/unicode/norm"
)

// APIActorPrefix starts the actor of every command serve's HTTP API sends
// ("api:<token name>").
const APIActorPrefix = "api:"

// IsAPIActor reports whether actor is the API's, or reads as it: it starts
// with APIActorPrefix once reduced to its skeleton (actorSkeleton), or its
// display order can be rearranged (bidi controls). Only serve can vouch
// for one: the engine decides such a command only with the API's proof
// (events.ActorProofHeader), or a NATS user could pass its commands off as
// a token holder's. A reader of the history sees glyphs, not bytes: " api:",
// "API：", "аpi:" (Cyrillic а) and "\u200bapi:" all show as api:.
func IsAPIActor(actor string) bool {
	return strings.ContainsFunc(actor, isBidiControl) || strings.HasPrefix(actorSkeleton(actor), APIActorPrefix)
}

// actorSkeleton is actor as a reader takes it, for the letters of
// APIActorPrefix and systemActors: compatibility forms decomposed (fullwidth, mathematical
// and circled letters, ︓), what shows as nothing dropped (spaces,
// controls, format and default-ignorable characters, combining marks),
// lower case, and common lookalikes mapped to those letters (lookalike).
// Only the API's prefix and the system actors are compared so: the API's
// own actors are plain ASCII (api.Token names), so a wide net refuses none
// of them, and a user's actor is refused only if it reads as a whole
// system actor's name.
func actorSkeleton(actor string) string {
	// Printable ASCII, every actor serve and the CLI make, is its own
	// skeleton but for case: NFKD leaves it, nothing in it is dropped,
	// and no lookalike is ASCII. Commands are decoded on the hot path.
	if !strings.ContainsFunc(actor, func(r rune) bool { return r <= ' ' || r > '~' }) {
		return strings.ToLower(actor)
	}
	var b strings.Builder
	for _, r := range norm.NFKD.String(actor) {
		if unicode.IsSpace(r) || unicode.In(r, unicode.Cc, unicode.Cf, unicode.Mn, unicode.Me, unicode.Zl, unicode.Zp,
			unicode.Other_Default_Ignorable_Code_Point, unicode.Variation_Selector) {
			continue
		}
		b.WriteRune(lookalike(unicode.ToLower(r)))
	}
	return b.String()
}

// lookalike is r, or the one of a, p, i and ':' (APIActorPrefix), or of
// the letters of systemActors, that r reads as in common fonts (Unicode's
// confusables for them, lower case, after NFKD).
func lookalike(r rune) rune {
	switch r {
	case 'а', 'ɑ', 'α', '⍺': // Cyrillic a, Latin alpha, Greek alpha, APL alpha
		return 'a'
	case 'р', 'ρ', 'ϱ', '⍴', 'ᴘ', 'ꓑ': // Cyrillic er, Greek rho, rho symbol, APL rho, small capital P, Lisu pa
		return 'p'
	case 'і', 'ı', 'ι', 'ɩ', 'ɪ', 'ӏ', '⍳', 'ꙇ': // Cyrillic i, dotless i, Greek iota, Latin iota, small capital I, palochka, APL iota, Cyrillic iota
		return 'i'
	case 'о', 'ο', 'ᴏ': // Cyrillic o, Greek omicron, small capital O (the letters below are those of systemActors)
		return 'o'
	case 'е', 'ҽ':
		return 'e'
	case 'с', 'ϲ', 'ᴄ':
		return 'c'
	case 'ѕ', 'ꜱ':
		return 's'
	case 'к', 'κ', 'ᴋ':
		return 'k'
	case 'һ', 'ʜ':
		return 'h'
	case 'ν', 'ѵ', 'ᴠ':
		return 'v'
	case 'ԝ', 'ѡ', 'ᴡ':
		return 'w'
	case 'г', 'ʀ':
		return 'r'
	case 'ո', 'ɴ':
		return 'n'
	case 'т', 'ᴛ':
		return 't'
	case '∶', '꞉', 'ː', '˸', '։', '׃', '܃', '܄', '᛬', '᠃', '᠉', '⁚', 'ꓽ', '︰', '፡', 'ः', 'ઃ': // ratio, modifier colons, Armenian, Hebrew, Syriac, runic, Mongolian, two dots, Lisu, vertical, Ethiopic, visargas
		return ':'
	}
	return r
}

// isBidiControl: the explicit directional formatting characters, which
// reorder what follows them on display ("\u202etluafed:ipa" shows as
// api:default).
func isBidiControl(r rune) bool {
	return r == '\u061c' || r == '\u200e' || r == '\u200f' || r >= '\u202a' && r <= '\u202e' || r >= '\u2066' && r <= '\u2069'
}
