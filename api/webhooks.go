package api

import (
	"context"
	"errors"
	"net/http"

	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/webhook"
)

// Webhooks manages webhook subscriptions (issue 14 item 4); a
// *webhook.Registry is one.
type Webhooks interface {
	// Add stores a webhook and returns it with its signing secret, the
	// only time the secret is shown. A bad spec is a *webhook.InvalidError.
	Add(ctx context.Context, s webhook.Spec) (webhook.Webhook, error)
	// List returns every webhook, without secrets.
	List(ctx context.Context) ([]webhook.Info, error)
	// Remove deletes a webhook and stops its deliveries; webhook.ErrNotFound
	// if there is none.
	Remove(ctx context.Context, id string) error
}

var _ Webhooks = (*webhook.Registry)(nil)

// WebhookRequest is POST /v1/webhooks's body.
type WebhookRequest struct {
	URL    string          `json:"url"`
	Events []fsm.EventType `json:"events,omitempty"`
	// Since, when given, replays the events after this stream sequence
	// (0: all of them) before the new ones; past the stream's last
	// sequence it is refused (400, field since).
	Since *uint64 `json:"since,omitempty"`
}

// WebhookList is GET /v1/webhooks's answer.
type WebhookList struct {
	Webhooks []webhook.Info `json:"webhooks"`
}

func (s *Server) addWebhook(w http.ResponseWriter, r *http.Request) {
	if err := onlyParams(r); err != nil {
		s.writeError(w, r, err)
		return
	}
	if s.cfg.Webhooks == nil {
		s.noWebhooks(w)
		return
	}
	var req WebhookRequest
	if err := decodeBody(r, &req, true); err != nil {
		s.writeError(w, r, err)
		return
	}
	h, err := s.cfg.Webhooks.Add(r.Context(), webhook.Spec{URL: req.URL, Events: req.Events, Since: req.Since})
	if err != nil {
		s.writeWebhookError(w, r, err)
		return
	}
	w.Header().Set("Location", "/v1/webhooks/"+h.ID)
	writeJSON(w, http.StatusCreated, h)
}

func (s *Server) listWebhooks(w http.ResponseWriter, r *http.Request) {
	if err := onlyParams(r); err != nil {
		s.writeError(w, r, err)
		return
	}
	if s.cfg.Webhooks == nil {
		s.noWebhooks(w)
		return
	}
	list, err := s.cfg.Webhooks.List(r.Context())
	if err != nil {
		s.writeWebhookError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, WebhookList{Webhooks: list})
}

func (s *Server) removeWebhook(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if err := webhook.ValidateID(id); err != nil {
		s.writeWebhookError(w, r, err)
		return
	}
	if err := noInput(r); err != nil {
		s.writeError(w, r, err)
		return
	}
	if s.cfg.Webhooks == nil {
		s.noWebhooks(w)
		return
	}
	if err := s.cfg.Webhooks.Remove(r.Context(), id); err != nil {
		s.writeWebhookError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// writeWebhookError translates the webhook package's errors.
func (s *Server) writeWebhookError(w http.ResponseWriter, r *http.Request, err error) {
	var ie *webhook.InvalidError
	switch {
	case errors.As(err, &ie):
		s.writeError(w, r, badField(ie.Field, ie.Message))
	case errors.Is(err, webhook.ErrNotFound) && r.PathValue("id") == "":
		// An add whose entry a remove took before the add was done.
		writeJSON(w, http.StatusNotFound, ErrorBody{Code: string(fsm.CodeNotFound),
			Message: "the webhook was removed by another request while it was being added: nothing of it is kept"})
	case errors.Is(err, webhook.ErrNotFound):
		writeJSON(w, http.StatusNotFound, ErrorBody{Code: string(fsm.CodeNotFound), Message: "no webhook has id " + r.PathValue("id")})
	default:
		s.writeError(w, r, err)
	}
}

func (s *Server) noWebhooks(w http.ResponseWriter) {
	writeJSON(w, http.StatusServiceUnavailable, ErrorBody{Code: CodeUnavailable, Message: "this server has no webhooks configured"})
}
