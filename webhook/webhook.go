package webhook

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/turnstile-dev/turnstile/fsm"
)

// Spec is what a caller asks for when adding a webhook.
type Spec struct {
	// URL receives a POST per event: http or https, no user info.
	URL string `json:"url"`
	// Events are the event types delivered (fsm.EventTypes); empty: all.
	Events []fsm.EventType `json:"events,omitempty"`
	// Since, when set, delivers the events after this stream sequence
	// first (a replay; 0: the whole stream); absent, only events recorded
	// after the add are delivered. It may not be past the stream's last
	// sequence at the add (Add refuses it).
	Since *uint64 `json:"since,omitempty"`
}

// Webhook is a stored subscription. Secret never leaves serve but once,
// in the answer to Add.
type Webhook struct {
	ID      string          `json:"id"`
	URL     string          `json:"url"`
	Events  []fsm.EventType `json:"events"`
	Created time.Time       `json:"created"`
	Secret  string          `json:"secret"`
}

// Info is a webhook as listed: no secret, and where its delivery stands.
type Info struct {
	ID      string          `json:"id"`
	URL     string          `json:"url"`
	Events  []fsm.EventType `json:"events"`
	Created time.Time       `json:"created"`
	// AckedStreamSeq is the stream sequence up to which every event was
	// delivered (or filtered out).
	AckedStreamSeq uint64 `json:"acked_stream_seq"`
	// Pending is how many events wait for delivery, the one being tried
	// included.
	Pending uint64 `json:"pending"`
	// Redelivered is how many deliveries in flight were redelivered by
	// the server (an earlier serve stopped before their ack).
	Redelivered int `json:"redelivered"`
}

// Errors callers branch on.
var (
	// ErrNotFound: no webhook has this id.
	ErrNotFound = errors.New("no such webhook")
	// ErrUnavailable: NATS did not answer.
	ErrUnavailable = errors.New("webhook store unavailable")
)

// InvalidError is a Spec (or id) that is refused, naming the field.
type InvalidError struct {
	Field   string
	Message string
}

func (e *InvalidError) Error() string { return e.Field + ": " + e.Message }

func invalid(field, format string, args ...any) error {
	return &InvalidError{Field: field, Message: fmt.Sprintf(format, args...)}
}

// MaxURLLen bounds a webhook URL.
const MaxURLLen = 2048

// MaxWebhooks bounds how many webhooks an installation holds: each is a
// consumer and a goroutine in serve.
const MaxWebhooks = 100

// idPattern is a webhook id: "wh-" and 16 hex digits, a valid consumer
// name.
var idPattern = regexp.MustCompile(`^wh-[0-9a-f]{16}$`)

// ValidateID checks a webhook id.
func ValidateID(id string) error {
	if !idPattern.MatchString(id) {
		return invalid("id", "%q is not a webhook id (wh- and 16 hex digits)", id)
	}
	return nil
}

func newID() (string, error) {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("webhook id: %w", err)
	}
	return "wh-" + hex.EncodeToString(b), nil
}

// secretPrefix marks a signing secret, so that one pasted into a log or
// a repository is recognisable.
const secretPrefix = "whsec_"

func newSecret() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("webhook secret: %w", err)
	}
	return secretPrefix + base64.RawURLEncoding.EncodeToString(b), nil
}

// checkSpec validates s and returns it normalised: events sorted and
// without repeats. allowPrivate lifts the destination check of literal
// addresses and local names (the dial-time check follows the same flag).
func checkSpec(s Spec, allowPrivate bool) (Spec, error) {
	if err := checkURL(s.URL, allowPrivate); err != nil {
		return Spec{}, err
	}
	if s.Since != nil && *s.Since > math.MaxInt64 {
		// The API's integers are int64s; and the replay starts at since+1,
		// which the largest uint64 would wrap to 0.
		return Spec{}, invalid("since", "%d is past any stream sequence", *s.Since)
	}
	evs := slices.Clone(s.Events)
	for _, e := range evs {
		if !e.Known() {
			return Spec{}, invalid("events", "unknown event type %q: use one of %s", e, eventList())
		}
	}
	slices.Sort(evs)
	s.Events = slices.Compact(evs)
	if s.Events == nil {
		s.Events = []fsm.EventType{}
	}
	return s, nil
}

func eventList() string {
	var names []string
	for _, e := range fsm.EventTypes() {
		names = append(names, string(e))
	}
	return strings.Join(names, ", ")
}

// checkURL refuses what serve must never be asked to call: a scheme other
// than http(s), user info (credentials in a URL end up in logs), no
// host, and, unless allowPrivate, a literal internal address or a local
// name. Names are checked again, resolved, when dialled.
func checkURL(raw string, allowPrivate bool) error {
	if len(raw) > MaxURLLen {
		return invalid("url", "is %d bytes long; at most %d allowed", len(raw), MaxURLLen)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return invalid("url", "does not parse: %v", errors.Unwrap(err))
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return invalid("url", "scheme %q: use http or https", u.Scheme)
	case u.User != nil:
		return invalid("url", "holds user info: put no credentials in a webhook URL; verify the Turnstile-Signature header instead")
	case u.Hostname() == "":
		return invalid("url", "has no host")
	case u.Fragment != "":
		return invalid("url", "has a fragment, which is never sent")
	case strings.ContainsFunc(u.Hostname(), func(r rune) bool { return r >= utf8.RuneSelf }):
		// net/http dials such a name through IDNA mapping, which makes
		// "①②⑦.0.0.1" 127.0.0.1: the name checked would not be the
		// name dialled.
		return invalid("url", "host %q is not ASCII: write an internationalised name in its xn-- form", u.Hostname())
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return invalid("url", "port %s is not a TCP port (1-65535)", p)
		}
	}
	if !allowPrivate {
		if err := checkHost(u.Hostname()); err != nil {
			// Name the switch: a receiver on this host or network is
			// a common wish, and the refusal alone does not say how.
			return invalid("url", "%v (serve's --webhook-allow-private allows it)", err)
		}
	}
	return nil
}

// matches reports whether an event of type t goes to a webhook of events.
func matches(events []fsm.EventType, t fsm.EventType) bool {
	return len(events) == 0 || slices.Contains(events, t)
}
