package apiclient

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/turnstile-dev/turnstile/api"
)

// Option tunes a Client.
type Option func(*Client)

// ProveServer has a plain-HTTP client send its token only on connections
// whose server proved first, on that connection, that it holds the token:
// each new connection starts with GET api.ProofPath and a fresh nonce, and
// is used only if one of the answers is api.TokenProof of the client's
// token and that nonce; otherwise it is closed, nothing else sent, and the
// request fails with a *ProofError. A listener that took serve's port (serve
// stopped or restarting) thus never sees the token. Proving per connection,
// not once, also covers a reconnect after serve restarted.
//
// Over https it changes nothing: the certificate's verification already
// says who answers. Plain-HTTP connections are then made directly, never
// through a proxy of the environment (the proof must come from the
// connection the token goes on).
func ProveServer() Option { return func(c *Client) { c.prove = true } }

// proofTimeout bounds the proof exchange on a new connection when the
// request's context has no nearer deadline.
const proofTimeout = 10 * time.Second

// maxProofAnswer bounds the proof answer read: a proof per token.
const maxProofAnswer = 1 << 20

// ProofError is a server at the API's URL that did not prove it holds the
// client's token: the token was not sent to it.
type ProofError struct {
	URL    string // the API's base URL
	Reason string // what the server did instead
}

func (e *ProofError) Error() string {
	return fmt.Sprintf("the server at %s did not prove that it holds the API token (%s), so the token was not sent to it: "+
		"another program may be listening on serve's port (is 'turnstile serve' running?), or serve does not accept this token "+
		"(pass --api-token, or use the data dir of the serve it is for)", e.URL, e.Reason)
}

// provingClient returns hc with a transport whose every new connection is
// proven first (see ProveServer); hc itself is left as it is.
func (c *Client) provingClient(hc *http.Client) (*http.Client, error) {
	var tr *http.Transport
	switch t := hc.Transport.(type) {
	case nil:
		tr = http.DefaultTransport.(*http.Transport).Clone()
	case *http.Transport:
		tr = t.Clone()
	default:
		return nil, fmt.Errorf("apiclient: ProveServer needs an *http.Transport, not %T", hc.Transport)
	}
	dial := tr.DialContext
	if dial == nil {
		dial = (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	}
	tr.Proxy = nil
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		if err := c.proveConn(ctx, conn); err != nil {
			_ = conn.Close()
			return nil, err
		}
		return conn, nil
	}
	out := *hc
	out.Transport = tr
	return &out, nil
}

// proveConn asks the server on conn for its proofs of a fresh nonce and
// checks them against the client's token, in constant time. It leaves conn
// at the start of the next answer, ready for the transport.
func (c *Client) proveConn(ctx context.Context, conn net.Conn) error {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return fmt.Errorf("proof nonce: %w", err)
	}
	nonce := base64.RawURLEncoding.EncodeToString(b)
	u := *c.base
	u.Path = c.base.Path + api.ProofPath
	u.RawQuery = "nonce=" + nonce
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json")

	deadline := time.Now().Add(proofTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	_ = conn.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer func() {
		stop()
		_ = conn.SetDeadline(time.Time{})
	}()
	fail := func(format string, args ...any) error {
		return &ProofError{URL: c.base.String(), Reason: fmt.Sprintf(format, args...)}
	}

	if err := req.Write(conn); err != nil {
		return c.proofIOError(ctx, err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		return c.proofIOError(ctx, err)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxProofAnswer+1))
	_ = resp.Body.Close()
	switch {
	case err != nil:
		return c.proofIOError(ctx, err)
	case resp.StatusCode == http.StatusNotFound:
		return fail("GET %s answered %s: not a serve, or one older than this CLI", api.ProofPath, resp.Status)
	case resp.StatusCode != http.StatusOK:
		return fail("GET %s answered %s", api.ProofPath, resp.Status)
	case len(body) > maxProofAnswer:
		return fail("its answer is over %d bytes", maxProofAnswer)
	}
	var ans api.ProofAnswer
	if err := json.Unmarshal(body, &ans); err != nil {
		return fail("its answer is not a proof: %v", err)
	}
	want := []byte(api.TokenProof(c.token, nonce))
	ok := 0
	for _, p := range ans.Proofs {
		ok |= subtle.ConstantTimeCompare([]byte(p), want)
	}
	if ok != 1 {
		return fail("no proof of %d matches this token", len(ans.Proofs))
	}
	// The transport reads the next answer from conn itself: anything the
	// server sent beyond this one would be taken as that answer.
	if br.Buffered() > 0 {
		return fail("it sent more than its answer")
	}
	if resp.Close {
		return errors.New("serve closed the connection after its proof (it may be stopping); try again")
	}
	return nil
}

// proofIOError is a failed read or write of the proof exchange: the
// context's end if it ended, else the error.
func (c *Client) proofIOError(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return fmt.Errorf("proof exchange with %s: %w", c.base.Host, err)
}
