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
	raw, err := s.leaderGet(ctx, leaderRequest{Seq: max(seq, 1), NextFor: filter})
	if err != nil {
		return leaderMsg{}, false, fmt.Errorf("message at or after %d: %w", seq, err)
	}
	if raw == nil {
		return leaderMsg{}, false, nil
	}
	return leaderMsg{Seq: raw.Sequence, Time: raw.Time}, true, nil
}

// leaderRequest is a message get's request: the message at Seq (with
// NextFor, the first at or after it on that subject), the first at or
// after StartTime on NextFor, or the last on LastFor.
type leaderRequest struct {
	Seq       uint64     `json:"seq,omitempty"`
	LastFor   string     `json:"last_by_subj,omitempty"`
	NextFor   string     `json:"next_by_subj,omitempty"`
	StartTime *time.Time `json:"start_time,omitempty"`
}

// leaderGet sends one message get to the stream leader and returns the
// message (its headers left out); nil when there is none.
func (s *Store) leaderGet(ctx context.Context, req leaderRequest) (*jetstream.RawStreamMsg, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	ctx, cancel := s.bounded(ctx)
	defer cancel()
	msg, err := s.js.Conn().RequestWithContext(ctx, s.apiSubject("STREAM.MSG.GET."+s.names.EventStream()), body)
	if err != nil {
		return nil, fmt.Errorf("message get from the stream leader: %w", err)
	}
	var resp struct {
		Error   *jetstream.APIError `json:"error"`
		Message *struct {
			Subject string    `json:"subject"`
			Seq     uint64    `json:"seq"`
			Data    []byte    `json:"data"`
			Time    time.Time `json:"time"`
		} `json:"message"`
	}
	if err := json.Unmarshal(msg.Data, &resp); err != nil {
		return nil, fmt.Errorf("message get from the stream leader: %w", err)
	}
	switch {
	case resp.Error != nil && resp.Error.ErrorCode == jetstream.JSErrCodeMessageNotFound:
		return nil, nil
	case resp.Error != nil:
		return nil, fmt.Errorf("message get from the stream leader: %w", resp.Error)
	case resp.Message == nil:
		return nil, fmt.Errorf("message get from the stream leader: %w", errNoMessageField)
	}
	m := resp.Message
	return &jetstream.RawStreamMsg{Subject: m.Subject, Sequence: m.Seq, Data: m.Data, Time: m.Time}, nil
}

var errNoMessageField = errors.New("answer without a message or an error")

// leaderWalkMax bounds the stream leader's walk in leaderMissing, in
// message gets (about half a second of them): a span can hold a month of
// a busy stream (a workspace idle since), and the walk holds up the
// projector.
const leaderWalkMax = 4096

// leaderMissing walks what the stream leader holds strictly between after
// and before up to the first sequence it lacks, and returns the size of
// that first hole: at least one when any is missing, not all that is (the
// caller only needs to know whether any is). ok is false when the leader
// held the first leaderWalkMax messages of the span and the walk stopped
// there, unanswered.
func (s *Store) leaderMissing(ctx context.Context, after, before uint64) (missing uint64, ok bool, err error) {
	seq := after + 1
	for gets := 0; seq < before && gets < leaderWalkMax; gets++ {
		m, held, err := s.leaderNext(ctx, seq, ">")
		if err != nil {
			return 0, false, err
		}
		if !held || m.Seq >= before {
			return before - seq, true, nil
		}
		if m.Seq > seq {
			return m.Seq - seq, true, nil
		}
		seq++
	}
	return 0, seq >= before, nil
}

// replicated reports whether the stream has more than one replica, as the
// leader says now (the cached configuration may predate a scale-up).
func (s *Store) replicated(ctx context.Context) (bool, error) {
	info, err := s.stream.Info(ctx)
	if err != nil {
		return false, fmt.Errorf("event stream info: %w", err)
	}
	s.replicasRead.Store(time.Now().UnixNano())
	return info.Config.Replicas > 1, nil
}

// replicasRecheck is how long replicatedLately trusts the configuration
// last read: a stream scaled up from one replica while this process runs
// is taken for replicated within that (its new replicas answer direct
// gets only once caught up), at the price of one stream info per that
// much time on a single-replica stream, not one per call.
const replicasRecheck = 10 * time.Second

// replicatedLately is replicated without a request per call: the
// configuration as last read (the cached stream info, which every info
// request refreshes), read again once older than replicasRecheck, by one
// caller at a time. A failed read leaves the one before standing.
func (s *Store) replicatedLately(ctx context.Context) bool {
	at := s.replicasRead.Load()
	if time.Since(time.Unix(0, at)) >= replicasRecheck && s.replicasRead.CompareAndSwap(at, time.Now().UnixNano()) {
		if r, err := s.replicated(ctx); err == nil {
			return r
		}
		s.replicasRead.Store(at) // the next caller asks again
	}
	return s.stream.CachedInfo().Config.Replicas > 1
}
