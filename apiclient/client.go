package apiclient

import (
	"bytes"
	"cmp"
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
	"github.com/turnstile-dev/turnstile/client"
	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/read"
	"github.com/turnstile-dev/turnstile/status"
	"github.com/turnstile-dev/turnstile/webhook"
)

// Client talks to one serve's HTTP API. It is safe for concurrent use.
type Client struct {
	base  *url.URL
	token string
	hc    *http.Client
	prove bool // see ProveServer
}

// New returns a client of the API at baseURL ("http://127.0.0.1:8080")
// that sends token; hc nil means a client without an overall timeout (the
// context of each call bounds it; streams last as long as it does).
func New(baseURL, token string, hc *http.Client, opts ...Option) (*Client, error) {
	u, err := url.Parse(strings.TrimRight(strings.TrimSpace(baseURL), "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("API URL %q: want http://HOST:PORT or https://HOST:PORT", baseURL)
	}
	if token == "" {
		return nil, errors.New("no API token: the API is never open")
	}
	if hc == nil {
		hc = &http.Client{}
	}
	c := &Client{base: u, token: token, hc: hc}
	for _, o := range opts {
		o(c)
	}
	if c.prove && u.Scheme == "http" {
		if c.hc, err = c.provingClient(hc); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// URL is the API's base URL.
func (c *Client) URL() string { return c.base.String() }

// Error is an error answer of the API that is not a refusal of a command.
type Error struct {
	Status int
	Body   api.ErrorBody
	raw    []byte
}

func (e *Error) Error() string {
	switch e.Status {
	case http.StatusUnauthorized:
		return "the API refused the token (401 unauthorized): pass the API's token with --api-token or TURNSTILE_API_TOKEN"
	}
	msg := e.Body.Message
	if msg == "" {
		msg = http.StatusText(e.Status)
	}
	if e.Body.Field != "" && !strings.HasPrefix(msg, e.Body.Field) {
		msg = e.Body.Field + ": " + msg
	}
	if e.Body.Code != "" {
		return fmt.Sprintf("%s (%d %s)", msg, e.Status, e.Body.Code)
	}
	return fmt.Sprintf("%s (%d)", msg, e.Status)
}

// Code is the rejection code the answer carries ("" for none).
func (e *Error) Code() fsm.Code { return api.CodeOf(e.Status, e.Body) }

// maxAnswer bounds the body of an answer this client reads whole.
const maxAnswer = 64 << 20

// do sends one request and decodes a 2xx answer into out (if not nil).
// An error answer is an *Error.
func (c *Client) do(ctx context.Context, method, path string, query url.Values, hdr http.Header, body, out any) (int, error) {
	resp, err := c.request(ctx, method, path, query, hdr, body)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	return resp.StatusCode, readAnswer(resp, method, path, out)
}

// readAnswer reads resp's body whole (up to maxAnswer) and decodes a 2xx
// answer into out (if not nil); an error answer is an *Error.
func readAnswer(resp *http.Response, method, path string, out any) error {
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		e := &Error{Status: resp.StatusCode, raw: b}
		_ = json.Unmarshal(b, &e.Body) // a body that is not ours still has its status
		return e
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("%s %s: the answer is not what this CLI understands: %w", method, path, err)
		}
	}
	return nil
}

// answerError is the *Error of an error answer, with at most 1 MiB of its
// body (an error body is small; a body that is not ours still has its
// status).
func answerError(resp *http.Response) *Error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	e := &Error{Status: resp.StatusCode, raw: b}
	_ = json.Unmarshal(b, &e.Body)
	return e
}

func (c *Client) request(ctx context.Context, method, path string, query url.Values, hdr http.Header, body any) (*http.Response, error) {
	u := *c.base
	u.Path = c.base.Path + path
	u.RawQuery = query.Encode()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), rd)
	if err != nil {
		return nil, err
	}
	for k, vs := range hdr {
		req.Header[k] = vs
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		if pe, ok := errors.AsType[*ProofError](err); ok {
			return nil, pe
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, &UnreachableError{URL: c.base.String(), Err: err}
	}
	return resp, nil
}

// UnreachableError is a request that got no answer: the API could not be
// reached (refused, reset, no route, TLS). The context's own end is its
// error instead.
type UnreachableError struct {
	URL string // the API's base URL
	Err error  // the HTTP client's error
}

func (e *UnreachableError) Error() string {
	return fmt.Sprintf("cannot reach the API at %s: %v (is 'turnstile serve' running?)", e.URL, e.Err)
}

func (e *UnreachableError) Unwrap() error { return e.Err }

// Send sends cmd (its ID is the Idempotency-Key; empty lets the server
// choose one) and returns its outcome; a refusal is a result with
// Outcome rejected. An answer the server could not give in time is an
// error matching client.ErrNoOutcome; a key used by another command is an
// *Error with code id_reused.
func (c *Client) Send(ctx context.Context, cmd fsm.Command) (api.CommandResult, error) {
	ws := "/v1/workspaces/" + url.PathEscape(cmd.Workspace)
	var method, path string
	var body any
	switch cmd.Type {
	case fsm.Create:
		method, path, body = http.MethodPost, "/v1/workspaces", api.CreateRequest{ID: cmd.Workspace, Spec: cmd.Spec}
	case fsm.Start, fsm.Stop, fsm.Restart:
		method, path = http.MethodPost, ws+"/"+string(cmd.Type)
	case fsm.Delete:
		method, path = http.MethodDelete, ws
	case fsm.Configure:
		if cmd.Spec == nil {
			return api.CommandResult{}, errors.New("configure needs a spec")
		}
		method, path, body = http.MethodPut, ws+"/spec", cmd.Spec
	default:
		return api.CommandResult{}, fmt.Errorf("the API takes no %s command", cmd.Type)
	}
	hdr := http.Header{}
	if cmd.ID != "" {
		hdr.Set(api.IdempotencyHeader, cmd.ID)
	}
	var res api.CommandResult
	_, err := c.do(ctx, method, path, nil, hdr, body, &res)
	var e *Error
	switch {
	case err == nil:
		return res, nil
	case !errors.As(err, &e):
		return res, err
	case e.Body.Code == api.CodeTimeout && e.Status == http.StatusGatewayTimeout:
		return res, fmt.Errorf("%w: %s", client.ErrNoOutcome, e.Body.Message)
	}
	// A refusal by the lifecycle names the state it was refused in; a
	// refused request (bad field, wrong token) does not.
	if code := e.Code(); code != "" && e.Body.State != "" {
		st, _ := fsm.ParseStatus(e.Body.State)
		rej := &fsm.Rejection{Code: code, Command: cmd.Type, Message: e.Body.Message, State: st, Allowed: e.Body.Allowed}
		if e.Body.Generation != nil {
			rej.Generation = *e.Body.Generation
		}
		if e.Body.SpecVersion != nil {
			rej.SpecVersion = *e.Body.SpecVersion
		}
		if e.Body.Command != "" {
			rej.Command = e.Body.Command
		}
		id := cmp.Or(e.Body.CommandID, cmd.ID)
		return api.CommandResult{CommandID: id, Workspace: cmd.Workspace, Command: rej.Command, Outcome: fsm.Rejected,
			State: e.Body.State, Generation: rej.Generation, Reason: e.Body.Message, Rejection: rej}, nil
	}
	return res, err
}

// notFound turns a 404 into an error matching read.ErrNoWorkspace.
func notFound(id string, err error) error {
	var e *Error
	if errors.As(err, &e) && e.Status == http.StatusNotFound {
		return fmt.Errorf("workspace %s: %w", id, read.ErrNoWorkspace)
	}
	return err
}

// Get reads one workspace.
func (c *Client) Get(ctx context.Context, id string) (api.Workspace, error) {
	var w api.Workspace
	_, err := c.do(ctx, http.MethodGet, "/v1/workspaces/"+url.PathEscape(id), nil, nil, nil, &w)
	return w, notFound(id, err)
}

// List reads one page of workspaces.
func (c *Client) List(ctx context.Context, o read.ListOptions) (api.WorkspaceList, error) {
	q := url.Values{}
	if o.Status != fsm.None {
		q.Set("status", o.Status.String())
	}
	if o.After != "" {
		q.Set("after", o.After)
	}
	if o.Limit > 0 {
		q.Set("limit", strconv.Itoa(o.Limit))
	}
	var l api.WorkspaceList
	_, err := c.do(ctx, http.MethodGet, "/v1/workspaces", q, nil, nil, &l)
	return l, err
}

// History reads a workspace's whole timeline, oldest first, a page at a
// time: serve then holds one page of a long history, not all of it.
func (c *Client) History(ctx context.Context, id string) ([]api.Event, error) {
	var evs []api.Event
	after := uint64(0)
	for {
		q := url.Values{"after": {strconv.FormatUint(after, 10)}, "limit": {strconv.Itoa(api.MaxPageLimit)}}
		var page api.Page
		if _, err := c.do(ctx, http.MethodGet, "/v1/workspaces/"+url.PathEscape(id)+"/events", q, nil, nil, &page); err != nil {
			return nil, notFound(id, err)
		}
		evs = append(evs, page.Events...)
		if page.NextAfter == nil {
			break
		}
		if *page.NextAfter <= after {
			return nil, fmt.Errorf("history of %s: serve's next page starts at %d, not after %d", id, *page.NextAfter, after)
		}
		after = *page.NextAfter
	}
	if len(evs) == 0 {
		return nil, fmt.Errorf("workspace %s: %w", id, read.ErrNoWorkspace)
	}
	return evs, nil
}

// Explain says what a workspace is waiting for.
func (c *Client) Explain(ctx context.Context, id string) (api.Explanation, error) {
	var x api.Explanation
	_, err := c.do(ctx, http.MethodGet, "/v1/workspaces/"+url.PathEscape(id)+"/explain", nil, nil, nil, &x)
	return x, notFound(id, err)
}

// Audit has serve replay workspace id's history; at ("" for none) is an
// event sequence or an RFC 3339 time to report the state at.
func (c *Client) Audit(ctx context.Context, id, at string) (api.AuditReport, error) {
	var rep api.AuditReport
	var q url.Values
	if at != "" {
		q = url.Values{"at": {at}}
	}
	_, err := c.do(ctx, http.MethodGet, "/v1/workspaces/"+url.PathEscape(id)+"/audit", q, nil, nil, &rep)
	return rep, notFound(id, err)
}

// AuditAll has serve replay every workspace in one pass over the event
// stream: a long request, bounded by ctx and by the server.
// AuditAllProgress is the same with the replay's progress.
func (c *Client) AuditAll(ctx context.Context) (api.AuditReport, error) {
	var rep api.AuditReport
	_, err := c.do(ctx, http.MethodGet, "/v1/audit", nil, nil, nil, &rep)
	return rep, err
}

// Cluster reads where Turnstile's data lives and how far behind each part
// is (GET /v1/cluster): what `turnstile status` shows.
func (c *Client) Cluster(ctx context.Context) (status.Report, error) {
	var rep status.Report
	_, err := c.do(ctx, http.MethodGet, "/v1/cluster", nil, nil, nil, &rep)
	return rep, err
}

// MaxWait is the longest one /wait request lasts; Wait asks again for
// longer waits (the server's own cap is 10 minutes by default).
const MaxWait = 5 * time.Minute

// Wait waits until workspace id is in state at generation gen or later
// (any when 0), for at most timeout. It returns the result and whether the
// state was reached; not reaching it in time is not an error.
func (c *Client) Wait(ctx context.Context, id string, state fsm.Status, gen uint64, timeout time.Duration) (api.WaitResult, error) {
	deadline := time.Now().Add(timeout)
	start := time.Now()
	for {
		left := time.Until(deadline)
		if left < 0 {
			left = 0
		}
		q := url.Values{"state": {state.String()}, "timeout": {min(left, MaxWait).String()}}
		if gen > 0 {
			q.Set("generation", strconv.FormatUint(gen, 10))
		}
		var res api.WaitResult
		_, err := c.do(ctx, http.MethodGet, "/v1/workspaces/"+url.PathEscape(id)+"/wait", q, nil, nil, &res)
		var e *Error
		switch {
		case err == nil:
			res.Waited = time.Since(start).Seconds()
			return res, nil
		case errors.As(err, &e) && e.Status == http.StatusRequestTimeout:
			// The 408's body is a WaitResult too: where the workspace is.
			if err := json.Unmarshal(e.raw, &res); err != nil {
				return res, fmt.Errorf("wait for %s: %w", id, err)
			}
			if time.Now().Before(deadline) {
				continue
			}
			res.Waited = time.Since(start).Seconds()
			return res, nil
		default:
			return res, notFound(id, err)
		}
	}
}

// CreateWebhook adds a webhook (POST /v1/webhooks) and returns it with its
// signing secret, the only time the secret is shown. A refused request
// (a bad URL or event type, the installation's limit) is an *Error with
// status 400, code invalid and the field; a serve without webhooks is an
// *Error with status 503.
func (c *Client) CreateWebhook(ctx context.Context, req api.WebhookRequest) (webhook.Webhook, error) {
	var h webhook.Webhook
	_, err := c.do(ctx, http.MethodPost, "/v1/webhooks", nil, nil, req, &h)
	return h, err
}

// ListWebhooks reads every webhook (GET /v1/webhooks), oldest first,
// without secrets, with where its delivery stands.
func (c *Client) ListWebhooks(ctx context.Context) ([]webhook.Info, error) {
	var l api.WebhookList
	if _, err := c.do(ctx, http.MethodGet, "/v1/webhooks", nil, nil, nil, &l); err != nil {
		return nil, err
	}
	return l.Webhooks, nil
}

// DeleteWebhook removes webhook id (DELETE /v1/webhooks/{id}): no delivery
// starts after it returns. An unknown id is an *Error with status 404 and
// code not_found, a malformed one an *Error with status 400.
func (c *Client) DeleteWebhook(ctx context.Context, id string) error {
	_, err := c.do(ctx, http.MethodDelete, "/v1/webhooks/"+url.PathEscape(id), nil, nil, nil, nil)
	return err
}
