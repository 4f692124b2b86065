package events

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// The streams allow direct gets, which any replica answers once it is
// about 90% caught up, and keeps answering however far behind it falls
// later (nats-server's direct get has no freshness check). A direct get's
// "nothing there", or a count, can so be a lagging replica's. Where such
// an answer would end a read early (ReadRaw) or hide a deleted event (the
// projector's gap check), the stream leader answers instead: its message
// get ($JS.API.STREAM.MSG.GET) is answered by the leader alone. jetstream's
// Stream.GetMsg would take the direct path on these streams, so the
// request is made here.

// leaderMsg is where a message the leader holds sits.
type leaderMsg struct {
	Seq  uint64
	Time time.Time
}

// leaderNext is the first message the stream leader holds at or after
// seq on subject filter (">": any); ok is false when there is none.
func (s *Store) leaderNext(ctx context.Context, seq uint64, filter string) (m leaderMsg, ok bool, err error) {
	req, err := json.Marshal(struct {
		Seq     uint64 `json:"seq"`
		NextFor string `json:"next_by_subj"`
	}{max(seq, 1), filter})
	if err != nil {
		return leaderMsg{}, false, err
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.js.Options().DefaultTimeout)
		defer cancel()
	}
	msg, err := s.js.Conn().RequestWithContext(ctx, s.apiSubject("STREAM.MSG.GET."+s.names.EventStream()), req)
	if err != nil {
		return leaderMsg{}, false, fmt.Errorf("message at or after %d from the stream leader: %w", seq, err)
	}
	var resp struct {
		Error   *jetstream.APIError `json:"error"`
		Message *struct {
			Seq  uint64    `json:"seq"`
			Time time.Time `json:"time"`
		} `json:"message"`
	}
	if err := json.Unmarshal(msg.Data, &resp); err != nil {
		return leaderMsg{}, false, fmt.Errorf("message at or after %d from the stream leader: %w", seq, err)
	}
	switch {
	case resp.Error != nil && resp.Error.ErrorCode == jetstream.JSErrCodeMessageNotFound:
		return leaderMsg{}, false, nil
	case resp.Error != nil:
		return leaderMsg{}, false, fmt.Errorf("message at or after %d from the stream leader: %w", seq, resp.Error)
	case resp.Message == nil:
		return leaderMsg{}, false, fmt.Errorf("message at or after %d from the stream leader: %w", seq, errNoMessageField)
	}
	return leaderMsg{Seq: resp.Message.Seq, Time: resp.Message.Time}, true, nil
}

var errNoMessageField = errors.New("answer without a message or an error")

// leaderMissing is how many stream sequences strictly between after and
// before the stream leader no longer holds: a walk over what it holds
// there, one message get per message.
func (s *Store) leaderMissing(ctx context.Context, after, before uint64) (uint64, error) {
	var missing uint64
	for seq := after + 1; seq < before; {
		m, ok, err := s.leaderNext(ctx, seq, ">")
		if err != nil {
			return 0, err
		}
		if !ok || m.Seq >= before {
			return missing + before - seq, nil
		}
		missing += m.Seq - seq
		seq = m.Seq + 1
	}
	return missing, nil
}

// replicated reports whether the stream has more than one replica, as the
// leader says now (the cached configuration may predate a scale-up).
func (s *Store) replicated(ctx context.Context) (bool, error) {
	info, err := s.stream.Info(ctx)
	if err != nil {
		return false, fmt.Errorf("event stream info: %w", err)
	}
	return info.Config.Replicas > 1, nil
}
