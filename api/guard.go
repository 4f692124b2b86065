package api

import (
	"context"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/turnstile-dev/turnstile/ui"
)

// The guards every request passes before its route, outermost first:
// the nosniff header, deadlines, the Host check (loopback listeners), the bearer token, the
// cross-origin check and the content type of writes. Each refusal is one
// JSON error with its own code, and nothing is published.

// noSniff marks every answer, the guards' refusals included, as of the
// type it says: without X-Content-Type-Options a browser may sniff a JSON
// answer that echoes a caller's text (a label, a reason, a webhook URL)
// as HTML and run it, on the API's own origin.
func noSniff(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Content-Type-Options", "nosniff")
		next.ServeHTTP(w, r)
	})
}

// limitTime bounds how long a request may take to send its body
// (ReadTimeout: a body trickled in is cut off) and how long its answer may
// take to be written (WriteTimeout). Once the body is read the read
// deadline is lifted again: net/http's background read of an idle
// connection would otherwise cancel the request's context while its
// command is still being decided. /wait sets its own, longer deadlines.
func (s *Server) limitTime(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		now := time.Now()
		// Errors mean the writer cannot set deadlines (a test recorder);
		// the http.Server's own timeouts then apply.
		_ = rc.SetWriteDeadline(now.Add(s.cfg.WriteTimeout))
		if r.ContentLength != 0 {
			_ = rc.SetReadDeadline(now.Add(s.cfg.ReadTimeout))
			r.Body = &liftAtEOF{ReadCloser: r.Body, rc: rc}
		}
		next.ServeHTTP(w, r)
	})
}

// liftAtEOF lifts the connection's read deadline once the body is read to
// its end.
type liftAtEOF struct {
	io.ReadCloser
	rc   *http.ResponseController
	done bool
}

func (b *liftAtEOF) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF && !b.done {
		b.done = true
		_ = b.rc.SetReadDeadline(time.Time{})
	}
	return n, err
}

// checkHost refuses a Host that is not a loopback name when the API listens
// on loopback. A web page whose domain an attacker re-points at 127.0.0.1
// (DNS rebinding) is same-origin to the browser, but its requests still
// carry the attacker's domain in Host.
func (s *Server) checkHost(next http.Handler) http.Handler {
	if !s.cfg.LoopbackOnly {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if IsLoopbackHost(r.Host) {
			next.ServeHTTP(w, r)
			return
		}
		s.refuse(w, r, http.StatusMisdirectedRequest, CodeWrongHost, fmt.Sprintf(
			"Host %q is not this machine: the API listens on loopback and answers only to localhost, 127.0.0.1 or [::1] "+
				"(other names are refused against DNS rebinding); use http://127.0.0.1:<port>", clip(r.Host, 100)))
	})
}

// IsLoopbackHost reports whether a Host header (a name or an IP, with or
// without a port) names this machine's loopback: localhost, 127.0.0.0/8 or
// ::1.
func IsLoopbackHost(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	return host != "" && IsLoopback(strings.ToLower(host))
}

// authorize requires a configured bearer token on every route except the
// health checks (which say nothing about workspaces), the timeline
// page's static files (which hold no data: the page sends the token on its
// own API requests) and ProofPath (where serve proves it holds a token
// before a client sends it), and puts the token's name in the request's context
// for the actor of its commands.
func (s *Server) authorize(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" || r.URL.Path == "/readyz" || r.URL.Path == ProofPath || ui.Public(r.URL.Path) {
			next.ServeHTTP(w, r)
			return
		}
		secret, ok := bearer(r.Header.Get("Authorization"))
		name := ""
		if ok {
			name, ok = s.tokens.match(secret)
		}
		if !ok {
			w.Header().Set("WWW-Authenticate", `Bearer realm="turnstile"`)
			s.refuse(w, r, http.StatusUnauthorized, CodeUnauthorized,
				"missing or wrong bearer token: send Authorization: Bearer <token>; serve keeps its generated token in <data-dir>/api-token")
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), tokenNameKey{}, name)))
	})
}

// checkOrigin refuses writes a browser sends from another origin (Go's
// CrossOriginProtection: Sec-Fetch-Site, else Origin against Host). Other
// clients send neither header and pass.
func (s *Server) checkOrigin(next http.Handler) http.Handler {
	cop := http.NewCrossOriginProtection()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := cop.Check(r); err != nil {
			s.refuse(w, r, http.StatusForbidden, CodeCrossOrigin,
				"a cross-origin write from a web page is refused ("+err.Error()+"): the API takes writes from programs, not from other sites")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// checkContentType requires Content-Type: application/json on every write
// with a body, and refuses any other content type even without one: an
// HTML form can send text/plain, urlencoded or multipart, never JSON.
func (s *Server) checkContentType(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case http.MethodGet, http.MethodHead, http.MethodOptions:
			next.ServeHTTP(w, r)
			return
		}
		ct := r.Header.Get("Content-Type")
		if ct == "" && r.ContentLength == 0 {
			next.ServeHTTP(w, r)
			return
		}
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
			got := "none"
			if ct != "" {
				got = fmt.Sprintf("%q", clip(ct, 100))
			}
			s.refuse(w, r, http.StatusUnsupportedMediaType, CodeUnsupportedMediaType,
				"Content-Type must be application/json (got "+got+"): send -H 'Content-Type: application/json'")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// refuse answers a request a guard stopped, and counts it.
func (s *Server) refuse(w http.ResponseWriter, r *http.Request, status int, code, msg string) {
	s.metrics.refused.WithLabelValues(code).Inc()
	s.log.Debug("api: refused", "method", r.Method, "path", r.URL.Path, "code", code, "remote", r.RemoteAddr)
	writeJSON(w, status, ErrorBody{Code: code, Message: msg})
}

// clip shortens s for an error message.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
