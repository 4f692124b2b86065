package api

import (
	"net/http"

	"github.com/turnstile-dev/turnstile/status"
)

// cluster answers GET /v1/cluster: the NATS servers holding the streams,
// each stream's replicas, leader and replica lag, each consumer's backlog
// and who handles commands (status.Report), read from JetStream now.
func (s *Server) cluster(w http.ResponseWriter, r *http.Request) {
	if err := onlyParams(r); err != nil {
		s.writeError(w, r, err)
		return
	}
	rep, err := status.Read(r.Context(), s.cfg.NC, s.cfg.Store.Names())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, rep)
}
