package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"

	"github.com/turnstile-dev/turnstile/api"
)

// openAPIChecker validates requests and answers against api/openapi.json
// (issue 14 item 6): every request the api tests make goes through check,
// so a route, parameter, status or field the document misses fails them.
type openAPIChecker struct {
	router routers.Router
}

// GET /v1/audit's ndjson answer is checked line by line: the document's
// schema for it is that of one line.
func init() { openapi3filter.RegisterBodyDecoder(api.NDJSON, ndjsonBody) }

// ndjsonBody validates every line of an application/x-ndjson body against
// the media type's schema and hands the last one on for the usual check.
func ndjsonBody(body io.Reader, h http.Header, schema *openapi3.SchemaRef, enc openapi3filter.EncodingFn) (any, error) {
	b, err := io.ReadAll(body)
	if err != nil {
		return nil, err
	}
	var last any
	n := 0
	for line := range bytes.Lines(b) {
		n++
		if !bytes.HasSuffix(line, []byte("\n")) {
			return nil, fmt.Errorf("line %d has no newline at its end", n)
		}
		v, err := openapi3filter.JSONBodyDecoder(bytes.NewReader(line), h, schema, enc)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		if err := schema.Value.VisitJSON(v, openapi3.VisitAsResponse()); err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		last = v
	}
	if n == 0 {
		return nil, errors.New("an ndjson answer without a line")
	}
	return last, nil
}

func newOpenAPIChecker(t *testing.T) *openAPIChecker {
	t.Helper()
	raw, err := os.ReadFile("openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	doc, err := openapi3.NewLoader().LoadFromData(raw)
	if err != nil {
		t.Fatalf("openapi.json: %v", err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("openapi.json is not a valid OpenAPI document: %v", err)
	}
	doc.Servers = nil // match the test server's address, whatever it is
	router, err := gorillamux.NewRouter(doc)
	if err != nil {
		t.Fatal(err)
	}
	return &openAPIChecker{router: router}
}

// check validates one exchange. A request the document does not allow must
// not succeed; a path or method it does not have must be answered 404
// no_route or 405 method_not_allowed; every answer to a documented route
// must be one the document describes, body and all.
func (c *openAPIChecker) check(req *http.Request, reqBody []byte, resp *http.Response, respBody []byte) error {
	probe := req.Clone(context.Background())
	probe.Body = io.NopCloser(bytes.NewReader(reqBody))
	route, params, err := c.router.FindRoute(probe)
	if err != nil {
		var b api.ErrorBody
		_ = json.Unmarshal(respBody, &b)
		switch {
		case resp.StatusCode == http.StatusNotFound && b.Code == api.CodeNoRoute,
			resp.StatusCode == http.StatusMethodNotAllowed && b.Code == api.CodeMethodNotAllowed:
			return nil
		case resp.StatusCode == http.StatusUnauthorized:
			return nil // refused before routing
		}
		return &openAPIError{what: req.Method + " " + req.URL.Path + " is missing from api/openapi.json (answered " +
			resp.Status + ")", err: err}
	}
	in := &openapi3filter.RequestValidationInput{Request: probe, PathParams: params, Route: route,
		Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc, MultiError: true}}
	if err := openapi3filter.ValidateRequest(context.Background(), in); err != nil && resp.StatusCode < 300 {
		return &openAPIError{what: req.Method + " " + req.URL.String() + " is invalid by api/openapi.json yet answered " + resp.Status, err: err}
	}
	out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: resp.StatusCode, Header: resp.Header,
		Options: &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true}}
	out.SetBodyBytes(respBody)
	if err := openapi3filter.ValidateResponse(context.Background(), out); err != nil {
		return &openAPIError{what: req.Method + " " + req.URL.String() + " answered " + resp.Status + " " +
			strings.TrimSpace(string(respBody)) + ", which api/openapi.json does not describe", err: err}
	}
	return nil
}

type openAPIError struct {
	what string
	err  error
}

func (e *openAPIError) Error() string { return "openapi: " + e.what + ": " + e.err.Error() }
func (e *openAPIError) Unwrap() error { return e.err }

// TestOpenAPIServed: GET /v1/openapi.json answers the embedded document,
// and the document parses and validates as OpenAPI 3 (issue 14 item 6).
func TestOpenAPIServed(t *testing.T) {
	e := newEnv(t, envOptions{noReadModel: true})
	r := e.do(t, "GET", "/v1/openapi.json", "")
	e.wantStatus(t, r, http.StatusOK)
	want, err := os.ReadFile("openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(r.body, want) {
		t.Fatal("GET /v1/openapi.json is not api/openapi.json")
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q", ct)
	}
}

// TestWrongMethodIs405: a known path with a method it has no route for is
// 405 with Allow and a JSON error with a code, not 404 (issue 14 item 6);
// an unknown path stays 404 no_route.
func TestWrongMethodIs405(t *testing.T) {
	e := newEnv(t, envOptions{noReadModel: true})
	for _, tc := range []struct{ method, path, allow string }{
		{"PATCH", "/v1/workspaces/w1", "GET, HEAD, DELETE"},
		{"GET", "/v1/workspaces/w1/start", "POST"},
		{"DELETE", "/v1/workspaces", "GET, HEAD, POST"},
		{"POST", "/v1/workspaces/w1/spec", "PUT"},
		{"POST", "/healthz", "GET, HEAD"},
	} {
		r := e.do(t, tc.method, tc.path, "")
		e.wantStatus(t, r, http.StatusMethodNotAllowed)
		if got := r.header.Get("Allow"); got != tc.allow {
			t.Errorf("%s %s: Allow %q, want %q", tc.method, tc.path, got, tc.allow)
		}
		if b := r.errorBody(t); b.Code != api.CodeMethodNotAllowed || b.Message == "" {
			t.Errorf("%s %s: body %s", tc.method, tc.path, r.body)
		}
	}
	r := e.do(t, "GET", "/v1/nothing-here", "")
	e.wantStatus(t, r, http.StatusNotFound)
	if b := r.errorBody(t); b.Code != api.CodeNoRoute {
		t.Errorf("unknown path: %s", r.body)
	}
}

// TestWaitTimeoutHasCode: /wait's 408 carries code timeout, as every error
// answer carries a code (issue 14 item 6).
func TestWaitTimeoutHasCode(t *testing.T) {
	e := newEnv(t, envOptions{noReadModel: true})
	e.create(t, "slow")
	r := e.do(t, "GET", "/v1/workspaces/slow/wait?state=stopped&timeout=100ms", "")
	e.wantStatus(t, r, http.StatusRequestTimeout)
	var w api.WaitResult
	r.decode(t, &w)
	if w.Code != api.CodeTimeout || w.Reached {
		t.Fatalf("408 body %s: want code %q", r.body, api.CodeTimeout)
	}
}

// TestOpenAPICheckerCatchesGaps: the checker the api tests run every
// request through fails a route the document lacks and an answer it does
// not describe, so it cannot pass vacuously (issue 14 item 6).
func TestOpenAPICheckerCatchesGaps(t *testing.T) {
	c := newOpenAPIChecker(t)
	req := func(method, path string) *http.Request {
		r, err := http.NewRequest(method, "http://127.0.0.1:1"+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	resp := func(status int, body string) *http.Response {
		return &http.Response{StatusCode: status, Status: http.StatusText(status),
			Header: http.Header{"Content-Type": {"application/json"}}, Body: io.NopCloser(strings.NewReader(body))}
	}
	if err := c.check(req("GET", "/v1/undocumented"), nil, resp(200, `{}`), []byte(`{}`)); err == nil {
		t.Error("an undocumented route that answered 200 passed")
	}
	if err := c.check(req("GET", "/healthz"), nil, resp(200, `{"status":"ok","extra":1}`), []byte(`{"status":"ok","extra":1}`)); err == nil {
		t.Error("an answer with an undocumented field passed")
	}
	if err := c.check(req("GET", "/healthz"), nil, resp(418, `{}`), []byte(`{}`)); err == nil {
		t.Error("an undocumented status passed")
	}
	if err := c.check(req("GET", "/healthz"), nil, resp(200, `{"status":"ok"}`), []byte(`{"status":"ok"}`)); err != nil {
		t.Errorf("a documented answer failed: %v", err)
	}
}
