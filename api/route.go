package api

import (
	"fmt"
	"net/http"
	"strings"
)

// CodeNoRoute and CodeMethodNotAllowed answer requests no route takes.
const (
	CodeNoRoute          = "no_route"           // 404: no route has this path
	CodeMethodNotAllowed = "method_not_allowed" // 405: the path exists, with other methods (see Allow)
)

// noRoute answers a request only the catch-all pattern matched: 405 with
// Allow when other methods have a route for its path, else 404. The mux
// itself would answer 405, but the catch-all (needed for a JSON 404)
// matches every method first.
func noRoute(mux *http.ServeMux, w http.ResponseWriter, r *http.Request) {
	var allow []string
	for _, m := range []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete} {
		probe := &http.Request{Method: m, URL: r.URL, Host: r.Host, Header: http.Header{}}
		if _, pattern := mux.Handler(probe); pattern != "/" && pattern != "" {
			allow = append(allow, m)
		}
	}
	if len(allow) == 0 {
		writeJSON(w, http.StatusNotFound, ErrorBody{Code: CodeNoRoute,
			Message: "no such route: see GET /v1/openapi.json or docs/operations.md for the API"})
		return
	}
	w.Header().Set("Allow", strings.Join(allow, ", "))
	writeJSON(w, http.StatusMethodNotAllowed, ErrorBody{Code: CodeMethodNotAllowed,
		Message: fmt.Sprintf("%s is not a method of %s: use %s", r.Method, r.URL.Path, strings.Join(allow, ", "))})
}
