package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/turnstile-dev/turnstile/api"
	"github.com/turnstile-dev/turnstile/apiclient"
	"github.com/turnstile-dev/turnstile/internal/atomicfile"
)

// Where serve writes the URLs of its API and of its NATS, inside
// --data-dir beside database-url, so that client commands started in the
// same directory reach this serve and no other (issue 14: the banner's
// hint talked to whatever NATS listened on 4222).
const (
	apiURLFile  = "api-url"
	natsURLFile = "nats-url"
)

// writeEndpoints records serve's API and NATS URLs in dataDir (0600,
// atomically). A URL's user and password, if any, are left out: the files
// say where, the token files say who.
func writeEndpoints(dataDir, apiURL, natsURL string) error {
	for file, u := range map[string]string{apiURLFile: apiURL, natsURLFile: natsURL} {
		if err := atomicfile.Write(filepath.Join(dataDir, file), []byte(withoutUserinfo(u)+"\n"), 0o600); err != nil {
			return fmt.Errorf("write %s: %w", file, err)
		}
	}
	return nil
}

// withoutUserinfo drops user:password@ (or a token@) from each URL of a
// comma-separated list (NATS takes several), so that a URL can be written
// to a file, a log or an error. It cuts the text rather than parsing it:
// url.Parse refuses some URLs nats.go takes (no scheme, a bad escape in
// the password) and those must not slip through whole. It cuts at the
// last @, not at the end of the authority: a password may hold an
// unescaped / ? or #, and a NATS URL has no path or query whose @ would
// be cut wrongly.
func withoutUserinfo(list string) string {
	parts := strings.Split(list, ",")
	for i, p := range parts {
		start := 0
		if j := strings.Index(p, "://"); j >= 0 {
			start = j + len("://")
		}
		if at := strings.LastIndex(p[start:], "@"); at >= 0 {
			parts[i] = strings.TrimSpace(p[:start] + p[start+at+1:])
		}
	}
	return strings.Join(parts, ",")
}

// redactURLError takes the credentials out of the URL a *url.Error in err
// quotes (nats.Connect returns url.Parse's error as it is), so that err
// can be logged; err is changed in place, and returned.
func redactURLError(err error) error {
	if ue, ok := errors.AsType[*url.Error](err); ok {
		ue.URL = withoutUserinfo(ue.URL)
	}
	return err
}

// dataDirFile is the trimmed content of a file serve wrote in the data
// dir; "" when there is none.
func (a *app) dataDirFile(name string) (string, error) {
	b, err := os.ReadFile(filepath.Join(a.dataDir, name))
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read %s: %w (run as the user that runs serve, or pass --api-url and --api-token)", filepath.Join(a.dataDir, name), err)
	}
	return strings.TrimSpace(string(b)), nil
}

// apiClient is the HTTP API client commands use, and whether they use it:
// with --api-url; or, when none of --api-url, --nats-url and --database-url
// is given, with the api-url serve wrote into the data dir (newAPIClient
// says how). ok false means the direct path: NATS and PostgreSQL.
func (a *app) apiClient() (c *apiclient.Client, ok bool, err error) {
	u := a.apiURL
	if u == "" {
		if a.natsURL != "" || a.databaseURL != "" {
			return nil, false, nil
		}
		if u, err = a.dataDirFile(apiURLFile); err != nil || u == "" {
			return nil, false, err
		}
	}
	c, err = a.newAPIClient(u)
	if err != nil {
		return nil, false, err
	}
	return c, true, nil
}

// newAPIClient is the client of serve's API at u, whichever command
// decided to use it: the token is --api-token (SECRET or NAME:SECRET, as
// serve takes it), else the one serve generated into <data-dir>/api-token;
// the client trusts --api-tls-ca besides the system's roots. A token about
// to cross the network in clear text gets a warning.
//
// Over plain HTTP the token goes only to a server that proved it holds
// it (apiclient.ProveServer), wherever the URL and the token came from:
// api-url and the default port may be held by another local user while
// serve is stopped. Over https the certificate says who answers.
func (a *app) newAPIClient(u string) (*apiclient.Client, error) {
	tok, err := a.apiToken, error(nil)
	if tok == "" {
		if tok, err = a.dataDirFile(apiTokenFile); err != nil {
			return nil, err
		}
	}
	if tok == "" {
		return nil, usageError(fmt.Errorf("no API token for %s: pass --api-token or set TURNSTILE_API_TOKEN (serve's token is in its <data-dir>/%s)", u, apiTokenFile))
	}
	if t, perr := api.ParseToken(tok); perr == nil {
		tok = t.Secret
	}
	hc, err := a.apiHTTPClient()
	if err != nil {
		return nil, err
	}
	c, err := apiclient.New(u, tok, hc, apiclient.ProveServer())
	if err != nil {
		return nil, usageError(fmt.Errorf("--api-url: %w", err))
	}
	if pu, perr := url.Parse(u); perr == nil && pu.Scheme == "http" && !api.IsLoopback(pu.Hostname()) {
		fmt.Fprintf(a.err, "turnstile: warning: the API token goes to %s in clear text (plain HTTP beyond loopback): use https\n", pu.Host)
	}
	return c, nil
}

// apiHTTPClient is the HTTP client of the API: the system's roots, and
// --api-tls-ca's certificates besides (serve's own CA or self-signed
// certificate).
func (a *app) apiHTTPClient() (*http.Client, error) {
	if a.apiTLSCA == "" {
		return nil, nil
	}
	pem, err := os.ReadFile(a.apiTLSCA)
	if err != nil {
		return nil, usageError(fmt.Errorf("--api-tls-ca: %w", err))
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, usageError(fmt.Errorf("--api-tls-ca %s: no PEM certificate in it", a.apiTLSCA))
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	return &http.Client{Transport: tr}, nil
}
