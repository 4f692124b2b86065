package events

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// batchRequest is a direct get's batch forms: up to Batch messages from
// Seq on (on NextFor's subject, if set), or the last message of each of
// MultiLastFor's subjects (up to UpToSeq, if set).
type batchRequest struct {
	Seq          uint64   `json:"seq,omitempty"`
	NextFor      string   `json:"next_by_subj,omitempty"`
	Batch        int      `json:"batch,omitempty"`
	MultiLastFor []string `json:"multi_last,omitempty"`
	UpToSeq      uint64   `json:"up_to_seq,omitempty"`
}

// errBatchDone stops a batch read from its callback.
var errBatchDone = errors.New("batch read done")

// directBatch sends req as one direct get of stream and calls fn for each
// message of the answer, in order, until the server's end of batch; none
// (404) is no error. fn returning errBatchDone ends the read early.
//
// It is jetstreamext.GetBatch's exchange on an inbox of its own (not under
// the connection's shared request inbox): GetBatch's inbox lies under the
// shared one's wildcard, so once the connection has made that (any plain
// request does), the server sends every message of the answer twice, to
// both; and GetBatch's synchronous subscription allocates nats.go's
// 64k-entry channel (512 KB) per call. Here the channel holds one answer.
func (s *Store) directBatch(ctx context.Context, stream string, req batchRequest, fn func(*jetstream.RawStreamMsg) error) error {
	body, err := json.Marshal(req)
	if err != nil {
		return err
	}
	ctx, cancel := s.bounded(ctx)
	defer cancel()
	nc := s.js.Conn()
	// An answer is at most Batch messages (one per subject for
	// MultiLastFor) and its end; a slower reader than the server only
	// makes the server's sends wait in the connection's buffers.
	ch := make(chan *nats.Msg, max(req.Batch, len(req.MultiLastFor), 1)+1)
	inbox := nc.NewInbox()
	sub, err := nc.ChanSubscribe(inbox, ch)
	if err != nil {
		return fmt.Errorf("direct get: %w", err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := nc.PublishRequest(s.apiSubject("DIRECT.GET."+stream), inbox, body); err != nil {
		return fmt.Errorf("direct get: %w", err)
	}
	for {
		var m *nats.Msg
		select {
		case m = <-ch:
		case <-ctx.Done():
			return fmt.Errorf("direct get: %w", ctx.Err())
		}
		// A status of the server's has no body and no sequence: a stored
		// message always has the sequence the server adds, and a user
		// command may carry a Status header of its own and no body.
		if len(m.Data) == 0 && m.Header.Get("Status") != "" && len(m.Header.Values(jetstream.SequenceHeader)) == 0 {
			switch st := m.Header.Get("Status"); st {
			case "204": // end of batch
				return nil
			case "404": // nothing there
				return nil
			case "503":
				return fmt.Errorf("direct get: %w", nats.ErrNoResponders)
			default:
				return fmt.Errorf("direct get: %s %s", st, m.Header.Get("Description"))
			}
		}
		raw, err := rawOfDirect(m)
		if err != nil {
			return fmt.Errorf("direct get: %w", err)
		}
		if err := fn(raw); err != nil {
			if errors.Is(err, errBatchDone) {
				return nil
			}
			return err
		}
	}
}

// bounded gives a request without a deadline the JetStream context's
// default timeout, as nats.go's own requests have.
func (s *Store) bounded(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, s.js.Options().DefaultTimeout)
}

// rawOfDirect reads a direct get's answer: the message is the body, where
// it was in the stream the headers. The server appends those after the
// stored message's own headers, which are its sender's (a user command
// may carry a Nats-Sequence of its own): each is its last value.
func rawOfDirect(m *nats.Msg) (*jetstream.RawStreamMsg, error) {
	seqText := serverHeader(m.Header, jetstream.SequenceHeader)
	seq, err := strconv.ParseUint(seqText, 10, 64)
	if err != nil {
		return nil, fmt.Errorf("%s %q: %w", jetstream.SequenceHeader, seqText, err)
	}
	atText := serverHeader(m.Header, jetstream.TimeStampHeaer)
	at, err := time.Parse(time.RFC3339Nano, atText)
	if err != nil {
		return nil, fmt.Errorf("%s %q: %w", jetstream.TimeStampHeaer, atText, err)
	}
	subject := serverHeader(m.Header, jetstream.SubjectHeader)
	if subject == "" {
		return nil, fmt.Errorf("no %s", jetstream.SubjectHeader)
	}
	return &jetstream.RawStreamMsg{Subject: subject, Sequence: seq, Header: m.Header, Data: m.Data, Time: at}, nil
}

// serverHeader is the last value of a direct get answer's header k: the
// one the server added.
func serverHeader(h nats.Header, k string) string {
	vs := h.Values(k)
	if len(vs) == 0 {
		return ""
	}
	return vs[len(vs)-1]
}
