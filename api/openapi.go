package api

import (
	_ "embed"
	"net/http"
)

// openAPI is the API's description, OpenAPI 3.0, written by hand: the
// api tests validate every request they make and every answer they get
// against it, so a route or field it misses fails them.
//
//go:embed openapi.json
var openAPI []byte

// serveOpenAPI answers GET /v1/openapi.json.
func (s *Server) serveOpenAPI(w http.ResponseWriter, r *http.Request) {
	if err := onlyParams(r); err != nil {
		s.writeError(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(openAPI)
}
