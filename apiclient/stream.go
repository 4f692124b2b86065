package apiclient

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/turnstile-dev/turnstile/api"
	"github.com/turnstile-dev/turnstile/internal/retry"
)

// FollowOptions tune Follow.
type FollowOptions struct {
	// OnRetry, if set, is told of each disconnect Follow recovers from,
	// before it waits to reconnect.
	OnRetry func(err error, wait time.Duration)
	// MaxBackoff caps the wait between reconnects; default 5s.
	MaxBackoff time.Duration
}

// FollowWorkspace streams workspace id's events after its event sequence
// after (0: from its first), then each new one, to fn, until ctx ends (a
// nil error) or fn or the server fails for good. fn gets each event once,
// in order; a disconnect is resumed where it stopped.
func (c *Client) FollowWorkspace(ctx context.Context, id string, after uint64, o FollowOptions, fn func(api.Event) error) error {
	err := c.follow(ctx, "/v1/workspaces/"+url.PathEscape(id)+"/events", after, o, func(_ uint64, ev api.Event) error { return fn(ev) })
	return notFound(id, err)
}

// FollowAll streams every workspace's events after stream sequence after,
// as FollowWorkspace does for one.
func (c *Client) FollowAll(ctx context.Context, after uint64, o FollowOptions, fn func(api.Event) error) error {
	return c.follow(ctx, "/v1/events", after, o, func(_ uint64, ev api.Event) error { return fn(ev) })
}

// follow reads the SSE stream at path from after on, reconnecting with
// Last-Event-ID after a disconnect or a server answer that may pass (429,
// 5xx), with backoff; other error answers end it.
func (c *Client) follow(ctx context.Context, path string, after uint64, o FollowOptions, fn func(uint64, api.Event) error) error {
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = 5 * time.Second
	}
	last := after
	for attempt := 0; ; attempt++ {
		got, err := c.followOnce(ctx, path, last, func(id uint64, ev api.Event) error {
			last = id
			return fn(id, ev)
		})
		if ctx.Err() != nil {
			return nil
		}
		var e *Error
		var fe *fnError
		var pe *ProofError
		switch {
		case errors.As(err, &fe):
			return fe.err
		case errors.As(err, &e) && e.Status != http.StatusTooManyRequests && e.Status < 500:
			return err
		case errors.As(err, &pe):
			// Something else answers at serve's address (see
			// ProveServer): say so rather than keep asking it.
			return err
		}
		if got {
			attempt = 0 // it was streaming: the next try is quick
		}
		if err == nil {
			err = io.ErrUnexpectedEOF // the server ended the stream (it is stopping)
		}
		wait := retry.Backoff(attempt, 200*time.Millisecond, o.MaxBackoff)
		if o.OnRetry != nil {
			o.OnRetry(err, wait)
		}
		if retry.Sleep(ctx, wait) != nil {
			return nil
		}
	}
}

// fnError is an error of the caller's function: it ends the stream.
type fnError struct{ err error }

func (e *fnError) Error() string { return e.err.Error() }

// followOnce reads one connection's events; got says whether any came.
func (c *Client) followOnce(ctx context.Context, path string, after uint64, fn func(uint64, api.Event) error) (got bool, err error) {
	hdr := http.Header{"Accept": {"text/event-stream"}}
	q := url.Values{"follow": {"1"}}
	if after > 0 {
		// Last-Event-ID is what a reconnecting EventSource sends.
		hdr.Set("Last-Event-ID", strconv.FormatUint(after, 10))
	}
	resp, err := c.request(ctx, http.MethodGet, path, q, hdr, nil)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return false, answerError(resp)
	}
	stop := context.AfterFunc(ctx, func() { _ = resp.Body.Close() })
	defer stop()
	return readSSE(resp.Body, func(id uint64, data []byte) error {
		var ev api.Event
		if err := json.Unmarshal(data, &ev); err != nil {
			return fmt.Errorf("event %d: %w", id, err)
		}
		got = true
		if err := fn(id, ev); err != nil {
			return &fnError{err}
		}
		return nil
	})
}

// readSSE calls fn with each message's id and data (a message without an
// id is skipped: every message of the API carries one). It returns nil at
// the end of the stream. The format is that of the WHATWG HTML standard's
// "Server-sent events", of which the API uses id, data and comments.
func readSSE(r io.Reader, fn func(id uint64, data []byte) error) (got bool, err error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	var id string
	var data []byte
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if id != "" && data != nil {
				n, perr := strconv.ParseUint(id, 10, 64)
				if perr != nil {
					return got, fmt.Errorf("event id %q: %w", id, perr)
				}
				if err := fn(n, data); err != nil {
					return got, err
				}
				got = true
			}
			id, data = "", nil
		case strings.HasPrefix(line, ":"):
		default:
			field, value, _ := strings.Cut(line, ":")
			value = strings.TrimPrefix(value, " ")
			switch field {
			case "id":
				id = value
			case "data":
				if data != nil {
					data = append(data, '\n')
				}
				data = append(data, value...)
			}
		}
	}
	return got, sc.Err()
}
