package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/turnstile-dev/turnstile/api"
	"github.com/turnstile-dev/turnstile/apiclient"
	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/webhook"
)

// defaultAPIURL is serve's --http-addr default, as a URL.
const defaultAPIURL = "http://127.0.0.1:8080"

// webhookAPI is the client of serve's HTTP API the webhook commands use:
// at --api-url (TURNSTILE_API_URL), else the api-url serve wrote into the
// data dir, else defaultAPIURL; token and TLS as newAPIClient takes them.
// The webhook commands take this path whatever the other commands take:
// webhooks exist only in serve's API.
func (a *app) webhookAPI() (*apiclient.Client, error) {
	base, err := a.apiURL, error(nil)
	if base == "" {
		if base, err = a.dataDirFile(apiURLFile); err != nil {
			return nil, err
		}
	}
	return a.newAPIClient(cmp.Or(base, defaultAPIURL))
}

// webhookError words an error of the webhook request method path as
// the webhook commands do: an error answer by the API's message alone,
// with the exit code its code implies; no answer, as serve's API out of
// reach, with where to point the CLI.
func webhookError(c *apiclient.Client, method, path string, err error) error {
	const unreachable = "cannot reach serve's API at %s (pass --api-url or set TURNSTILE_API_URL): %w"
	var ae *apiclient.Error
	var ue *apiclient.UnreachableError
	switch {
	case errors.As(err, &ae):
		status := strconv.Itoa(ae.Status) + " " + http.StatusText(ae.Status)
		if ae.Body.Message == "" { // not the API's body
			return fmt.Errorf("%s %s: %s", method, path, status)
		}
		if code := ae.Code(); code != "" {
			return withCode(exitCodeOf(code), errors.New(ae.Body.Message))
		}
		return fmt.Errorf("%s (%s)", ae.Body.Message, status)
	case errors.As(err, &ue):
		return fmt.Errorf(unreachable, ue.URL, ue.Err)
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		// No answer before the command's time ran out (or it was
		// interrupted).
		return fmt.Errorf(unreachable, c.URL(), err)
	}
	return err
}

func (a *app) webhookCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "webhook",
		Short: "Send lifecycle events to HTTP receivers: add, list, rm (over serve's HTTP API)",
		Long: `A webhook receives a signed POST for every lifecycle event, at least once and
in stream order, retried with back-off while it fails; a receiver that was down
gets everything since its last 2xx. Each body is {"id","webhook","stream_seq",
"type","event"}, with the event as GET /v1/events shows it (its cause
included). Verify the Turnstile-Signature header: t=<unix>,v1=<hex HMAC-SHA256
of t + "." + body under the secret 'add' prints once>.

These commands talk to serve's HTTP API: TURNSTILE_API_URL (default the
data dir's api-url, else ` + defaultAPIURL + `) with TURNSTILE_API_TOKEN
(default the data dir's api-token).`,
	}
	c.AddCommand(a.webhookAddCmd(), a.webhookListCmd(), a.webhookRmCmd())
	return c
}

func (a *app) webhookAddCmd() *cobra.Command {
	var evs []string
	var since uint64
	c := &cobra.Command{
		Use:   "add URL",
		Short: "Subscribe URL to lifecycle events; prints the signing secret, once",
		Args:  exactArgs("URL"),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := api.WebhookRequest{URL: args[0]}
			for _, e := range evs {
				t, err := parseEventType(e)
				if err != nil {
					return usageError(err)
				}
				req.Events = append(req.Events, t)
			}
			if cmd.Flags().Changed("since") {
				req.Since = &since
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
			defer cancel()
			c, err := a.webhookAPI()
			if err != nil {
				return err
			}
			h, err := c.CreateWebhook(ctx, req)
			if err != nil {
				return webhookError(c, http.MethodPost, "/v1/webhooks", err)
			}
			if a.structured() {
				return a.print(h)
			}
			// The URL is the user's text as serve stored it: a bidi
			// control in its path passes serve's checks (as the list's
			// table, escape what reaches the terminal).
			fmt.Fprintf(a.out, "webhook %s added: %s (%s)\n", printable(h.ID), printable(h.URL), printable(eventsText(h.Events)))
			fmt.Fprintf(a.out, "signing secret (shown only now; keep it with the receiver):\n%s\n", printable(h.Secret))
			return nil
		},
	}
	c.Flags().StringSliceVar(&evs, "events", nil, "event types to deliver, comma-separated or repeated, such as created,provisioned,provision_failed (the workspace. prefix may be left out; default: all)")
	c.Flags().Uint64Var(&since, "since", 0, "first replay the events after this stream sequence (0: the whole stream); without it only new events are delivered")
	return c
}

// parseEventType takes an event type with or without its "workspace."
// prefix.
func parseEventType(s string) (fsm.EventType, error) {
	s = strings.TrimSpace(s)
	t := fsm.EventType(s)
	if !strings.Contains(s, ".") {
		t = fsm.EventType("workspace." + s)
	}
	if !t.Known() {
		var names []string
		for _, e := range fsm.EventTypes() {
			names = append(names, strings.TrimPrefix(string(e), "workspace."))
		}
		return "", fmt.Errorf("--events: %q is not an event type: use %s", s, strings.Join(names, ", "))
	}
	return t, nil
}

func eventsText(evs []fsm.EventType) string {
	if len(evs) == 0 {
		return "all events"
	}
	var s []string
	for _, e := range evs {
		s = append(s, strings.TrimPrefix(string(e), "workspace."))
	}
	return strings.Join(s, ",")
}

func (a *app) webhookListCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List the webhooks and their delivery (never their secrets)",
		Args:  exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
			defer cancel()
			c, err := a.webhookAPI()
			if err != nil {
				return err
			}
			list, err := c.ListWebhooks(ctx)
			if err != nil {
				return webhookError(c, http.MethodGet, "/v1/webhooks", err)
			}
			if a.structured() {
				return a.print(list)
			}
			t := newTable(a.out, "ID", "URL", "EVENTS", "ACKED", "PENDING", "CREATED")
			for _, h := range list {
				t.row(h.ID, h.URL, eventsText(h.Events), strconv.FormatUint(h.AckedStreamSeq, 10), strconv.FormatUint(h.Pending, 10), formatTime(h.Created))
			}
			return t.flush()
		},
	}
}

func (a *app) webhookRmCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "rm ID",
		Short: "Remove a webhook: its deliveries stop and its consumer is deleted",
		Args:  exactArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := webhook.ValidateID(args[0]); err != nil {
				return usageError(err)
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
			defer cancel()
			c, err := a.webhookAPI()
			if err != nil {
				return err
			}
			if err := c.DeleteWebhook(ctx, args[0]); err != nil {
				return webhookError(c, http.MethodDelete, "/v1/webhooks/"+args[0], err)
			}
			if a.structured() {
				return a.print(map[string]any{"id": args[0], "removed": true})
			}
			fmt.Fprintf(a.out, "webhook %s removed\n", printable(args[0]))
			return nil
		},
	}
}
