package main

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/fsm"
)

// The users' account takes its commands, direct gets and stream infos in
// through a relay of serve's, not straight through an import: a permission sees only a
// message's subject, never its headers or body, and some are harmful.
//
//   - A batched direct get answers up to the max_bytes its sender writes
//     in the request (else the server's 64 MB), and the server reads and
//     copies that answer inside serve's process while the stream's writes
//     wait: a user that stored a few large commands (refused, and kept for
//     days) could ask for all of them at once, again and again, at some 60
//     bytes a request (TestDirectGetBatchBounded). The relay bounds it to
//     directGetMaxBytes.
//   - nats.go takes a delivered message with no body and a Status header
//     for a status of the server's: a command stored so stalled its
//     partition for good (TestStatusHeadersStallNoPartition). The relay
//     refuses such commands (refuseCommand).
//   - A stream info request may ask for every subject's count or every
//     deleted sequence, which the server lists and sorts whole at each
//     request (TestStreamInfoDetailsRefused). The relay refuses those but
//     for the KV buckets the roles may read (the engines' members, which
//     turnstile status lists by subject).

// directGetMaxBytes bounds the answer to a batched direct get through the
// users' account (and the one message that crosses it, at most the
// server's 1 MB payload). A reader that asks again from the sequence after
// the last message it got (all of Turnstile's do) reads everything still.
const directGetMaxBytes = 1 << 20

// directGetSubject is where users send direct gets, and where the relay
// takes them in; directGetRelay is where the relay sends them on, the
// users' account's import of serve's direct gets; likewise streamInfo and
// streamInfoRelay, and commandRelay for serve's commands
// (events.Names.Commands).
const (
	directGetSubject = "$JS.API.DIRECT.GET"
	directGetRelay   = "_TURNSTILE_RELAY.DIRECT.GET"
	commandRelay     = "_TURNSTILE_RELAY.CMD"
	streamInfo       = "$JS.API.STREAM.INFO"
	streamInfoRelay  = "_TURNSTILE_RELAY.STREAM.INFO"
)

// natsRelayUser is the relay's NATS user, in the users' account.
const natsRelayUser = "turnstile-relay"

// relayConns is how many connections relay direct gets and stream infos:
// the server reads each answer on the connection that sent the request
// on, so one would make every user's reads wait on each other's.
const relayConns = 4

// relayPermissions are the relay's: take users' commands, direct gets and
// stream infos in, send them on, answer a refused one; nothing else.
func relayPermissions(n events.Names) *server.Permissions {
	return &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: []string{directGetRelay + ".>", commandRelay + ".>", streamInfoRelay + ".>"}},
		Subscribe: &server.SubjectPermission{Allow: []string{directGetSubject + ".>", n.Commands(), streamInfo + ".>"}},
		Response:  &server.ResponsePermission{MaxMsgs: 1, Expires: time.Minute},
	}
}

// startRelay connects the relays to srv (in-process, with token, which
// natsAuth signs in to the users' account) and returns their connections,
// to be closed before the server stops. Commands go through the first
// alone, so that each sender's commands reach the stream in the order
// sent.
func startRelay(srv *server.Server, token string, n events.Names, log *slog.Logger) ([]*nats.Conn, error) {
	var conns []*nats.Conn
	for i := range relayConns {
		nc, err := nats.Connect("", nats.InProcessServer(srv), nats.Token(token), nats.Name(fmt.Sprintf("turnstile-relay-%d", i)),
			nats.MaxReconnects(-1), nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
				// A flood beyond the subscription's pending limits is
				// dropped (nats.ErrSlowConsumer): those senders get no answer.
				log.Warn("NATS relay", "err", err)
			}))
		if err != nil {
			closeAll(conns)
			return nil, fmt.Errorf("the NATS relay: %w", err)
		}
		conns = append(conns, nc)
		if _, err := nc.QueueSubscribe(directGetSubject+".>", "relay", func(m *nats.Msg) { relayDirectGet(nc, m) }); err != nil {
			closeAll(conns)
			return nil, fmt.Errorf("the NATS relay: %w", err)
		}
		if _, err := nc.QueueSubscribe(streamInfo+".>", "relay", func(m *nats.Msg) { relayStreamInfo(nc, m) }); err != nil {
			closeAll(conns)
			return nil, fmt.Errorf("the NATS relay: %w", err)
		}
		if i == 0 {
			if _, err := nc.Subscribe(n.Commands(), func(m *nats.Msg) { relayCommand(nc, n, m) }); err != nil {
				closeAll(conns)
				return nil, fmt.Errorf("the NATS command relay: %w", err)
			}
		}
		if err := nc.Flush(); err != nil {
			closeAll(conns)
			return nil, fmt.Errorf("the NATS relay: %w", err)
		}
	}
	return conns, nil
}

func closeAll(conns []*nats.Conn) {
	for _, nc := range conns {
		nc.Close()
	}
}

// relayDirectGet sends a user's direct get m on to serve's account, its
// answer to m's reply subject, bounded. A request without a reply gets no
// answer from the server: dropped. Trace headers are dropped: the server
// would judge their destination by the relay's permissions.
func relayDirectGet(nc *nats.Conn, m *nats.Msg) {
	if m.Reply == "" {
		return
	}
	_ = nc.PublishMsg(&nats.Msg{
		Subject: directGetRelay + strings.TrimPrefix(m.Subject, directGetSubject),
		Reply:   m.Reply,
		Header:  withoutTrace(m.Header),
		Data:    boundDirectGet(m.Data),
	})
}

// withoutTrace is h without message trace headers: the relay's own
// publish would be traced, its destination judged by the relay's
// permissions (and refused). The sender's publish was traced already.
func withoutTrace(h nats.Header) nats.Header {
	var out nats.Header
	for k, v := range h {
		if strings.HasPrefix(strings.ToLower(k), "nats-trace-") || strings.EqualFold(k, "traceparent") {
			continue
		}
		if out == nil {
			out = nats.Header{}
		}
		out[k] = v
	}
	return out
}

// relayCommand sends a user's command m on to serve's command stream, its
// answer (the stream's ack) to m's reply subject; one refuseCommand
// refuses is answered as the stream answers a refusal (nats.go's publish
// returns it as a *jetstream.APIError, code 400) and never stored.
func relayCommand(nc *nats.Conn, n events.Names, m *nats.Msg) {
	if reason := refuseCommand(m); reason != "" {
		if m.Reply != "" {
			refuse(nc, m.Reply, "", reason)
		}
		return
	}
	_ = nc.PublishMsg(&nats.Msg{
		Subject: commandRelay + "." + strings.TrimPrefix(m.Subject, strings.TrimSuffix(n.Commands(), ">")),
		Reply:   m.Reply,
		Header:  withoutTrace(m.Header),
		Data:    m.Data,
	})
}

// relayStreamInfo sends a user's stream info request m on, or refuses it
// (a 400, as relayCommand) when it asks a stream other than a KV bucket for
// its subjects or deleted sequences. The request is read as the server
// reads it (its own type); one the server cannot read goes on, for the
// server to refuse.
func relayStreamInfo(nc *nats.Conn, m *nats.Msg) {
	if m.Reply == "" {
		return
	}
	stream := strings.TrimPrefix(m.Subject, streamInfo+".")
	var req server.JSApiStreamInfoRequest
	if !strings.HasPrefix(stream, "KV_") && len(m.Data) > 0 && json.Unmarshal(m.Data, &req) == nil &&
		(req.SubjectsFilter != "" || req.DeletedDetails) {
		refuse(nc, m.Reply, "io.nats.jetstream.api.v1.stream_info_response",
			"turnstile: a stream info through the users' account lists no subjects or deleted messages (subjects_filter, deleted_details): the server lists and sorts them whole at each request")
		return
	}
	_ = nc.PublishMsg(&nats.Msg{
		Subject: streamInfoRelay + strings.TrimPrefix(m.Subject, streamInfo),
		Reply:   m.Reply,
		Header:  withoutTrace(m.Header),
		Data:    m.Data,
	})
}

// refuse answers on reply as the server answers a bad request.
func refuse(nc *nats.Conn, reply, typ, reason string) {
	resp := map[string]any{"error": map[string]any{"code": 400, "err_code": refusedCode, "description": reason}}
	if typ != "" {
		resp["type"] = typ
	}
	b, _ := json.Marshal(resp)
	_ = nc.Publish(reply, b)
}

// refusedCode is the err_code of the relay's refusals: the
// server's own for a bad request (JSBadRequestErr).
const refusedCode = 10003

// refuseCommand says why the command m may not be stored, "" if it may.
//
// A message with no body and a Status header is, to nats.go, a status of
// the server's, whoever sent it: delivered to the engine's pull, "400"
// ended the pull as a bad request and "409 Consumer Deleted" as deleted
// (the engine's reads of the partition's unfinished commands failed the
// same way, for good), "100" and "503" swallowed the delivery, never
// acked; read back in a direct get's answer it ended the answer or failed
// it. No command is empty, and Status and Description are the server's
// headers, so both are refused. Nats-Pin-Id too: nats.go's pull takes
// its pin from a delivery's first one, which would be the sender's. And a
// Nats-Msg-Id longer than a command id can be: the stream keeps every id
// in memory for its duplicate window, and the engine refuses such a
// command anyway.
func refuseCommand(m *nats.Msg) string {
	if len(m.Data) == 0 {
		return "turnstile: a command is a JSON object; this message has no body"
	}
	for k, vs := range m.Header {
		switch {
		case strings.EqualFold(k, "Status"), strings.EqualFold(k, "Description"), strings.EqualFold(k, "Nats-Pin-Id"):
			return fmt.Sprintf("turnstile: a command may not carry the header %s, which the NATS server sets on its own messages", k)
		case strings.EqualFold(k, jetstream.MsgIDHeader):
			for _, v := range vs {
				if len(v) > fsm.MaxCommandIDLen {
					return fmt.Sprintf("turnstile: %s is %d bytes; a command id is at most %d", k, len(v), fsm.MaxCommandIDLen)
				}
			}
		}
	}
	return ""
}

// boundDirectGet returns the direct get request body with its batch
// answer bounded to directGetMaxBytes. It reads the body as the server
// does (its own type, encoding/json: the last of duplicate keys, field
// names in any case), so the bound is the one the server sees; a body the
// server cannot read either is passed on unchanged, for the server to
// refuse.
func boundDirectGet(body []byte) []byte {
	var req server.JSApiMsgGetRequest
	if len(body) == 0 || json.Unmarshal(body, &req) != nil {
		return body
	}
	if req.Batch == 0 && len(req.MultiLastFor) == 0 {
		return body // one message
	}
	if req.MaxBytes != 0 && req.MaxBytes <= directGetMaxBytes {
		return body // negative: the server sends one message
	}
	req.MaxBytes = directGetMaxBytes
	b, err := json.Marshal(req)
	if err != nil {
		return body
	}
	return b
}
