package api_test

import (
	"net/http"
	"slices"
	"testing"

	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/status"
)

// issue 13 item 4: GET /v1/cluster needs the token and reports the server,
// every stream with its replicas and leader, and the engine's consumers
// with their backlog.
func TestCluster(t *testing.T) {
	e := newEnv(t, envOptions{noReadModel: true})
	anon := &env{openapi: e.openapi, t: e.t, srv: e.srv}
	t.Run("NoTokenIs401", func(t *testing.T) {
		e.wantStatus(t, anon.do(t, "GET", "/v1/cluster", ""), http.StatusUnauthorized)
	})
	t.Run("OK", func(t *testing.T) {
		e.create(t, "kappa")
		r := e.do(t, "GET", "/v1/cluster", "")
		e.wantStatus(t, r, http.StatusOK)
		var rep status.Report
		r.decode(t, &rep)
		if len(rep.Nodes) != 1 || !rep.Nodes[0].Connected || !rep.Nodes[0].JetStream || rep.Nodes[0].Version == "" {
			t.Errorf("nodes %+v, want the one connected JetStream server with its version", rep.Nodes)
		}
		names := e.core.Store.Names()
		var streams []string
		for _, s := range rep.Streams {
			streams = append(streams, s.Name)
			if s.Replicas != 1 || s.LastSeq == 0 && s.Name != names.SystemStream() {
				t.Errorf("stream %+v, want 1 replica and messages", s)
			}
		}
		if want := []string{names.CommandStream(), names.SystemStream(), names.EventStream()}; !slices.Equal(streams, want) {
			t.Errorf("streams %v, want %v", streams, want)
		}
		if len(rep.Partitions) != events.DefaultPartitions || rep.P != events.DefaultPartitions {
			t.Errorf("%d partitions, p %d, want %d", len(rep.Partitions), rep.P, events.DefaultPartitions)
		}
		for _, en := range rep.Engines {
			if en.P != events.DefaultPartitions || en.PMismatch {
				t.Errorf("engine %+v, want p %d and no p_mismatch", en, events.DefaultPartitions)
			}
		}
		for _, p := range rep.Partitions {
			if len(p.Consumers) != 2 || len(rep.Engines) != 1 || p.Owner != rep.Engines[0].Name {
				t.Errorf("partition %+v, want the engine's consumers on the command and system streams and the one engine %+v", p, rep.Engines)
			}
		}
	})
}
