package ui

import (
	"bytes"
	"embed"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"
)

//go:embed static
var static embed.FS

// Prefix is the path the page's assets are served under; the page itself
// is "/".
const Prefix = "/ui/"

// CSP is the Content-Security-Policy of every page answer.
const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; " +
	"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// Register adds the page's routes to mux: GET / and GET /ui/<file>. Other
// paths stay with mux's other patterns (the API's JSON 404 among them).
func Register(mux *http.ServeMux) {
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) { serveFile(w, r, "index.html") })
	mux.HandleFunc("GET "+Prefix+"{file}", func(w http.ResponseWriter, r *http.Request) { serveFile(w, r, r.PathValue("file")) })
}

// Public reports whether path is one of the page's, which answer without a
// bearer token: they hold only the embedded files.
func Public(p string) bool {
	// An unclean path (/ui/../v1/...) is not the page's: the mux would
	// redirect it, and it must not pass without a token on the way.
	return p == "/" || strings.HasPrefix(p, Prefix) && path.Clean(p) == p
}

// serveFile answers the embedded file static/name, or 404.
func serveFile(w http.ResponseWriter, r *http.Request, name string) {
	h := w.Header()
	h.Set("Content-Security-Policy", CSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	h.Set("Cross-Origin-Resource-Policy", "same-origin")
	// A new binary may bring new files under the same names.
	h.Set("Cache-Control", "no-cache")
	if !fs.ValidPath(name) || strings.Contains(name, "/") {
		http.Error(w, "404 page not found", http.StatusNotFound)
		return
	}
	b, err := fs.ReadFile(static, "static/"+name)
	if err != nil {
		http.Error(w, "404 page not found", http.StatusNotFound)
		return
	}
	http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(b))
}
