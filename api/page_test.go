package api_test

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/turnstile-dev/turnstile/api"
	"github.com/turnstile-dev/turnstile/ui"
)

// rawGet sends GET path to e's server with the given headers (pairs) and
// no token unless one is among them: the page's routes are not in
// openapi.json, so this bypasses e.do's check.
func (e *env) rawGet(t *testing.T, path string, headers ...string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest("GET", e.srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		if headers[i] == "Host" {
			req.Host = headers[i+1]
		} else {
			req.Header.Set(headers[i], headers[i+1])
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

// The timeline page is served at / without a token (its files hold no
// data), with its CSP, behind the loopback Host check; everything else
// still needs the token, and an unknown API path is still a JSON 404.
func TestPageRoutes(t *testing.T) {
	e := newEnv(t, envOptions{noReadModel: true, configure: func(c *api.Config) { c.LoopbackOnly = true }})
	for _, path := range []string{"/", "/ui/app.js"} {
		resp, body := e.rawGet(t, path) //nolint:bodyclose // rawGet read and closed it
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Security-Policy") != ui.CSP || body == "" {
			t.Fatalf("%s without a token: %d %v", path, resp.StatusCode, resp.Header)
		}
	}
	resp, body := e.rawGet(t, "/", "Host", "attacker.example") //nolint:bodyclose // rawGet read and closed it
	if resp.StatusCode != http.StatusMisdirectedRequest || !strings.Contains(body, api.CodeWrongHost) {
		t.Fatalf("/ with a rebound Host: %d %s", resp.StatusCode, body)
	}
	for _, path := range []string{"/v1/workspaces", "/v1/nothing-here", "/ui/../v1/workspaces", "/ui/"} {
		resp, body := e.rawGet(t, path) //nolint:bodyclose // rawGet read and closed it
		if resp.StatusCode != http.StatusUnauthorized && resp.StatusCode != http.StatusMovedPermanently {
			t.Fatalf("%s without a token: %d %s", path, resp.StatusCode, body)
		}
	}
	r := e.do(t, "GET", "/v1/nothing-here", "")
	e.wantStatus(t, r, http.StatusNotFound)
	if b := r.errorBody(t); b.Code != api.CodeNoRoute {
		t.Fatalf("an unknown API path: %s", r.body)
	}
	r = e.do(t, "POST", "/", "")
	e.wantStatus(t, r, http.StatusMethodNotAllowed)
	if got := r.header.Get("Allow"); got != "GET, HEAD" {
		t.Fatalf("POST /: Allow %q", got)
	}
}
