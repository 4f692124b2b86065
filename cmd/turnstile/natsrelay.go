package main

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// The users' account takes its direct gets in through a relay of serve's,
// not straight through an import: a batched direct get answers up to the
// max_bytes its sender writes in the request (else the server's 64 MB),
// and the server reads and copies that answer inside serve's process
// while the stream's writes wait. A user that stored a few large commands
// (refused, and kept for days) could ask for all of them at once, again
// and again, at some 60 bytes a request (TestDirectGetBatchBounded). A
// permission sees only the subject, never the request; the relay reads
// the request and bounds it to directGetMaxBytes.

// directGetMaxBytes bounds the answer to a batched direct get through the
// users' account (and the one message that crosses it, at most the
// server's 1 MB payload). A reader that asks again from the sequence after
// the last message it got (all of Turnstile's do) reads everything still.
const directGetMaxBytes = 1 << 20

// directGetSubject is where users send direct gets, and where the relay
// takes them in; directGetRelay is where the relay sends them on, the
// users' account's import of serve's direct gets.
const (
	directGetSubject = "$JS.API.DIRECT.GET"
	directGetRelay   = "_TURNSTILE_RELAY.DIRECT.GET"
)

// natsRelayUser is the relay's NATS user, in the users' account.
const natsRelayUser = "turnstile-relay"

// directGetRelays is how many connections relay direct gets: the server
// reads each answer on the connection that sent the request on, so one
// would make every user's reads wait on each other's.
const directGetRelays = 4

// relayPermissions are the relay's: take users' direct gets in, send them
// on, nothing else.
func relayPermissions() *server.Permissions {
	return &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: []string{directGetRelay + ".>"}},
		Subscribe: &server.SubjectPermission{Allow: []string{directGetSubject + ".>"}},
	}
}

// startDirectGetRelay connects the relays to srv (in-process, with token,
// which natsAuth signs in to the users' account) and returns their
// connections, to be closed before the server stops.
func startDirectGetRelay(srv *server.Server, token string, log *slog.Logger) ([]*nats.Conn, error) {
	var conns []*nats.Conn
	for i := range directGetRelays {
		nc, err := nats.Connect("", nats.InProcessServer(srv), nats.Token(token), nats.Name(fmt.Sprintf("turnstile-relay-%d", i)),
			nats.MaxReconnects(-1), nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
				// A flood beyond the subscription's pending limits is
				// dropped (nats.ErrSlowConsumer): those senders get no answer.
				log.Warn("NATS direct get relay", "err", err)
			}))
		if err != nil {
			closeAll(conns)
			return nil, fmt.Errorf("the NATS direct get relay: %w", err)
		}
		conns = append(conns, nc)
		if _, err := nc.QueueSubscribe(directGetSubject+".>", "relay", func(m *nats.Msg) { relayDirectGet(nc, m) }); err != nil {
			closeAll(conns)
			return nil, fmt.Errorf("the NATS direct get relay: %w", err)
		}
		if err := nc.Flush(); err != nil {
			closeAll(conns)
			return nil, fmt.Errorf("the NATS direct get relay: %w", err)
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
	out := &nats.Msg{
		Subject: directGetRelay + strings.TrimPrefix(m.Subject, directGetSubject),
		Reply:   m.Reply,
		Data:    boundDirectGet(m.Data),
	}
	for k, v := range m.Header {
		if strings.HasPrefix(k, "Nats-Trace-") || strings.EqualFold(k, "traceparent") {
			continue
		}
		if out.Header == nil {
			out.Header = nats.Header{}
		}
		out.Header[k] = v
	}
	_ = nc.PublishMsg(out)
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
