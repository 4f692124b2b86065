package jspull

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ackPrefix starts the reply subject of every delivery of a consumer with
// acks, and of no status.
const ackPrefix = "$JS.ACK."

// nextAPI is the API subject of a pull request, before the stream and
// consumer names.
const nextAPI = "CONSUMER.MSG.NEXT."

// Header names the server uses on its statuses and deliveries.
const (
	statusHeader      = "Status"
	descriptionHeader = "Description"
	pendingMsgsHeader = "Nats-Pending-Messages"
	pinIDHeader       = "Nats-Pin-Id"
)

// NextSubject is the subject a pull of consumer on stream is asked on,
// under js's API prefix or domain.
func NextSubject(js jetstream.JetStream, stream, consumer string) string {
	api := nextAPI + stream + "." + consumer
	o := js.Options()
	switch {
	case o.APIPrefix != "":
		return strings.TrimSuffix(o.APIPrefix, ".") + "." + api
	case o.Domain != "":
		return "$JS." + o.Domain + ".API." + api
	}
	return jetstream.DefaultAPIPrefix + api
}

// request is the body of a pull request (nats-server's
// JSApiConsumerGetNextRequest); durations in nanoseconds.
type request struct {
	Expires   time.Duration `json:"expires,omitempty"`
	Batch     int           `json:"batch,omitempty"`
	NoWait    bool          `json:"no_wait,omitempty"`
	Heartbeat time.Duration `json:"idle_heartbeat,omitempty"`
	Group     string        `json:"group,omitempty"`
	PinID     string        `json:"id,omitempty"`
}

// Options shape a continuous pull.
type Options struct {
	// Batch is how many messages are asked for, and held, at most; 0
	// means 500 (nats.go's default).
	Batch int
	// Expiry is each pull request's life at the server; 0 means 30 s.
	Expiry time.Duration
	// Group is the priority group to pull in, "" for none; a group of a
	// consumer with pinned clients (the pin is sent back).
	Group string
	// PinID is the pin the first requests are sent with, "" for none: a
	// pin an earlier pull of the consumer held (PinID), so that a new pull
	// still pinned to it is served at once rather than after the
	// consumer's PinnedTTL. The server's replaces it as deliveries come; a
	// pin that is no longer the consumer's is answered 423, and the pull
	// asks again without one. Ignored without a Group.
	PinID string
}

// Iter is a continuous pull of one consumer. It implements
// jetstream.MessagesContext; Next is for one goroutine, Stop and Drain may
// be called from any.
type Iter struct {
	nc        *nats.Conn
	subject   string
	o         Options
	heartbeat time.Duration

	sub    *nats.Subscription
	msgs   chan *nats.Msg
	conn   chan nats.Status
	done   chan struct{}
	closed atomic.Bool
	drain  atomic.Bool // set by Drain, cleared by Stop
	endMu  sync.Mutex  // Stop and Drain, one at a time
	msgsMu sync.Once   // closes msgs

	mu      sync.Mutex // Next's state below
	pending int        // messages asked for and not handed out or given up on
	epoch   uint64     // nc's reconnects when the requests in pending were sent
	lastSeq uint64     // the consumer sequence of the last delivery
	ended   bool       // done was seen while draining
	news    bool       // a CONNECTED seen since ask last looked at the epoch

	// pin is the last delivery's pin id (or Options.PinID until one
	// comes), sent with each request; "" after a 423. Written under mu
	// and pinMu: PinID reads it under pinMu alone, as Next holds mu for
	// as long as it waits.
	pin   string
	pinMu sync.Mutex
}

// Messages starts pulling on subject (NextSubject) over nc.
func Messages(nc *nats.Conn, subject string, o Options) (*Iter, error) {
	if o.Batch <= 0 {
		o.Batch = 500
	}
	if o.Expiry <= 0 {
		o.Expiry = 30 * time.Second
	}
	it := &Iter{
		nc: nc, subject: subject, o: o,
		heartbeat: min(o.Expiry/2, 30*time.Second),
		// Twice the batch and the statuses around it: after a reconnect
		// a request from before may still deliver beside the new one.
		msgs:  make(chan *nats.Msg, 2*o.Batch+16),
		done:  make(chan struct{}),
		epoch: nc.Stats().Reconnects,
	}
	if o.Group != "" {
		// Without a group the server refuses a pin id (400, ending the pull).
		it.pin = o.PinID
	}
	it.conn = nc.StatusChanged(nats.CONNECTED, nats.RECONNECTING)
	sub, err := nc.ChanSubscribe(nc.NewInbox(), it.msgs)
	if err != nil {
		nc.RemoveStatusListener(it.conn)
		return nil, fmt.Errorf("jspull: subscribe: %w", err)
	}
	// Called once the subscription is gone (unsubscribed, drained, or its
	// connection closed): nothing more is sent on msgs. Maybe twice: a
	// drain cut short by Stop, or by the connection's close, ends it again.
	sub.SetClosedHandler(func(string) { it.msgsMu.Do(func() { close(it.msgs) }) })
	it.sub = sub
	return it, nil
}

// Next returns the next delivery, waiting for it as long as it takes. It
// returns an error
//   - if the iterator was stopped or drained: ErrMsgIteratorClosed, with
//     ErrConnectionClosed if the connection was closed;
//   - if the pull ended for good, stopped: ErrConsumerDeleted (a 409, or a
//     503 while the API says the consumer is not found, or deliveries
//     numbered again: made again), ErrBadRequest;
//   - for a missed heartbeat or another status: the pull goes on, call
//     Next again.
//
// It takes no options.
func (it *Iter) Next(opts ...jetstream.NextOpt) (jetstream.Msg, error) {
	if len(opts) > 0 {
		return nil, fmt.Errorf("%w: jspull's Next takes no options", jetstream.ErrInvalidOption)
	}
	it.mu.Lock()
	defer it.mu.Unlock()
	if it.closed.Load() && !it.drain.Load() {
		return nil, it.closedErr()
	}
	hb := time.NewTimer(2 * it.heartbeat)
	defer hb.Stop()
	if it.ended {
		hb.Stop()
	}
	conn := it.conn
	for {
		if !it.closed.Load() {
			if err := it.ask(); err != nil {
				return nil, err
			}
		}
		done := it.done
		if it.ended {
			done = nil // draining: read msgs until the subscription closes it
		}
		select {
		case m, ok := <-it.msgs:
			if !ok {
				it.Stop()
				return nil, it.closedErr()
			}
			if it.closed.Load() && !it.drain.Load() {
				return nil, it.closedErr() // stopped: what is held is dropped
			}
			hb.Reset(2 * it.heartbeat)
			if strings.HasPrefix(m.Reply, ackPrefix) {
				if err := it.madeAgain(m); err != nil {
					return nil, err
				}
				it.pending = max(it.pending-1, 0)
				// The last value: the server appends its own to any
				// the message was stored with. Only in a group: pulled
				// without, the header is a publisher's, and the server
				// refuses a pin id sent back (400, ending the pull).
				if ids := m.Header.Values(pinIDHeader); it.o.Group != "" && len(ids) > 0 && ids[len(ids)-1] != "" {
					it.setPin(ids[len(ids)-1])
				}
				return &delivery{m: m, nc: it.nc}, nil
			}
			if err := it.status(m); err != nil {
				return nil, err
			}
		case s, ok := <-conn:
			switch {
			case !ok:
				conn = nil // closed by Stop or Drain: no more news
			case s == nats.CONNECTED:
				it.news = true // ask looks at the epoch, and asks again
				hb.Reset(2 * it.heartbeat)
			default:
				hb.Stop()
			}
		case <-hb.C:
			if it.nc.IsClosed() {
				return nil, it.closedByNC()
			}
			if !it.nc.IsConnected() {
				// Not missed: there is no server to send them (the
				// RECONNECTING a call before read stopped its own
				// timer). CONNECTED wakes this call.
				continue
			}
			it.pending = 0 // ask again
			return nil, jetstream.ErrNoHeartbeat
		case <-done:
			if !it.drain.Load() {
				return nil, it.closedErr()
			}
			it.ended = true
			hb.Stop() // nothing more is asked for
		}
	}
}

// setPin sets the pin sent with the next requests. Under mu.
func (it *Iter) setPin(id string) {
	if id == it.pin {
		return // the common case, at each delivery: no second lock
	}
	it.pinMu.Lock()
	it.pin = id
	it.pinMu.Unlock()
}

// PinID is the pin the pull sends with its requests: the last delivery's
// (Options.PinID until one came), "" if none or after the server answered
// that the pin is no longer the consumer's (423). Read when the pull has
// ended, it is the pin a new pull of the consumer may start with
// (Options.PinID). Any goroutine may call it, also while Next waits.
func (it *Iter) PinID() string {
	it.pinMu.Lock()
	defer it.pinMu.Unlock()
	return it.pin
}

// madeAgain is an error, and stops the pull, if m's consumer sequence
// is not past the last delivery's: the consumer was deleted and made again
// while none of this pull's requests waited at it (which would have had a
// 409), and its deliveries start again. The caller must take it afresh as
// after a 409, not read the new one's deliveries after the old one's. (In
// a cluster, a new leader that had not had the last deliveries replicated
// numbers them again, and ends the pull too: taken afresh, no harm done.)
// Under mu.
func (it *Iter) madeAgain(m *nats.Msg) error {
	md, err := m.Metadata()
	if err != nil {
		return nil // handed out: the caller refuses it
	}
	seq := md.Sequence.Consumer
	if seq <= it.lastSeq {
		it.Stop()
		return fmt.Errorf("%w: made again (a delivery numbered %d after %d)", jetstream.ErrConsumerDeleted, seq, it.lastSeq)
	}
	it.lastSeq = seq
	return nil
}

// ask sends a pull request once fewer than half of the batch are still
// to come. Under mu.
func (it *Iter) ask() error {
	full := it.pending >= (it.o.Batch+1)/2
	if full && !it.news {
		// Enough asked for, and no reconnect seen: the common case, at
		// each delivery, without taking nc's lock.
		return nil
	}
	if it.nc.IsClosed() {
		return it.closedByNC()
	}
	// Not while disconnected: the request would wait in nc's buffer and
	// reach the server after the reconnect, beside the one asked then
	// (CONNECTED wakes Next).
	if !it.nc.IsConnected() {
		return nil
	}
	it.news = false
	if r := it.nc.Stats().Reconnects; r != it.epoch {
		// The requests sent before are taken as gone with the connection
		// they were sent on (the server may keep one until its expiry,
		// if it sees interest in the inbox again: the channel's room
		// for twice the batch holds what both deliver); what they
		// delivered and Next has not handed out is still held (counted
		// as still to come, it holds its place in msgs). By the count of
		// reconnects, not at Next's CONNECTED: a request sent after the
		// reconnect and before Next read it counts.
		it.epoch, it.pending = r, min(it.pending, len(it.msgs))
	}
	if it.pending >= (it.o.Batch+1)/2 {
		return nil
	}
	body, err := json.Marshal(request{
		Expires: it.o.Expiry, Batch: it.o.Batch - it.pending, Heartbeat: it.heartbeat,
		Group: it.o.Group, PinID: it.pin,
	})
	if err != nil {
		return fmt.Errorf("jspull: %w", err)
	}
	if err := it.nc.PublishRequest(it.subject, it.sub.Subject, body); err != nil {
		if errors.Is(err, nats.ErrConnectionClosed) {
			it.Stop()
			return it.closedErr()
		}
		return fmt.Errorf("jspull: pull request: %w", err)
	}
	it.pending = it.o.Batch
	return nil
}

// status acts on a message that is not a delivery; an error is for Next to
// return. Under mu.
func (it *Iter) status(m *nats.Msg) error {
	code, desc := m.Header.Get(statusHeader), m.Header.Get(descriptionHeader)
	switch code {
	case "100": // idle heartbeat
		return nil
	case "404", "408": // the request found nothing more, or expired
		it.settle(m)
		return nil
	case "409":
		switch {
		case strings.EqualFold(desc, "Consumer Deleted"):
			it.Stop()
			return fmt.Errorf("%w: %s", jetstream.ErrConsumerDeleted, desc)
		case strings.EqualFold(desc, "Leadership Change"):
			it.pending = 0
			return nil
		}
		it.settle(m)
		return fmt.Errorf("jspull: pull request ended: %s %s", code, desc)
	case "423": // the pin changed: pull unpinned, the server pins anew
		// Each request waiting with the old pin has its own 423, with
		// what it had left: taking off all of them at the first would
		// ask again beside the others, still waiting.
		it.setPin("")
		it.settle(m)
		return nil
	case "400":
		it.Stop()
		return fmt.Errorf("%w: %s", jetstream.ErrBadRequest, desc)
	case "503":
		// No one listens on the subject: the consumer is gone (deleted
		// while none of this pull's requests waited at it, which would
		// have had a 409), or, in a cluster, has no leader for a moment
		// (an election takes seconds). The server tells which: gone, the
		// caller must take it afresh, as after a 409.
		it.pending = 0
		if err := it.gone(); err != nil {
			it.Stop()
			return fmt.Errorf("%w: %w (%w)", jetstream.ErrConsumerDeleted, err, nats.ErrNoResponders)
		}
		return fmt.Errorf("jspull: %w", nats.ErrNoResponders)
	case "":
		return nil // neither a delivery nor the server's: not for this pull
	}
	it.pending = 0
	return fmt.Errorf("jspull: unexpected status %q %s", code, desc)
}

// infoWait bounds gone's request.
const infoWait = 2 * time.Second

// gone returns an error if the JetStream API says the consumer pulled on
// it.subject, or its stream, does not exist; nil if it exists or the API
// did not answer (an election, an outage: the pull goes on).
func (it *Iter) gone() error {
	i := strings.LastIndex(it.subject, nextAPI)
	if i < 0 {
		return nil
	}
	resp, err := it.nc.Request(it.subject[:i]+"CONSUMER.INFO."+it.subject[i+len(nextAPI):], nil, infoWait)
	if err != nil {
		return nil
	}
	var info struct {
		Error *jetstream.APIError `json:"error"`
	}
	if json.Unmarshal(resp.Data, &info) != nil || info.Error == nil {
		return nil
	}
	switch info.Error.ErrorCode {
	case jetstream.JSErrCodeConsumerNotFound, jetstream.JSErrCodeStreamNotFound:
		return info.Error
	}
	return nil
}

// settle takes off what an ended request will not deliver (all it asked
// for, if the server does not say).
func (it *Iter) settle(m *nats.Msg) {
	n, err := strconv.Atoi(m.Header.Get(pendingMsgsHeader))
	if err != nil {
		it.pending = 0
		return
	}
	it.pending = max(it.pending-n, 0)
}

// closedByNC stops the pull of a closed connection. Closed before the
// subscription's closed handler was set, msgs is never closed: the pull
// ends here (at a request or a heartbeat's time), not by missed
// heartbeats for ever.
func (it *Iter) closedByNC() error {
	it.Stop()
	return it.closedErr()
}

func (it *Iter) closedErr() error {
	if it.nc.IsClosed() {
		return fmt.Errorf("%w: %w", jetstream.ErrMsgIteratorClosed, jetstream.ErrConnectionClosed)
	}
	return jetstream.ErrMsgIteratorClosed
}

// Stop ends the pull at once: what was delivered and not yet returned is
// dropped (the server delivers it again after the ack wait). Also after
// Drain: the drain, which waits for a round trip to the server, is cut
// short.
func (it *Iter) Stop() {
	it.endMu.Lock()
	defer it.endMu.Unlock()
	it.drain.Store(false)
	if it.closed.CompareAndSwap(false, true) {
		close(it.done)
		it.nc.RemoveStatusListener(it.conn)
	}
	_ = it.sub.Unsubscribe()
}

// Drain ends the pull once what was delivered has been returned by Next;
// after Stop it does nothing.
func (it *Iter) Drain() {
	it.endMu.Lock()
	defer it.endMu.Unlock()
	if it.closed.Load() {
		return
	}
	it.drain.Store(true) // before closed: Next sees a drain, not a stop
	it.closed.Store(true)
	close(it.done)
	it.nc.RemoveStatusListener(it.conn)
	if err := it.sub.Drain(); err != nil {
		_ = it.sub.Unsubscribe()
	}
}

// silence is how long Fetch waits for the server's next message.
const silence = time.Second

// Fetch asks the consumer pulled on subject for up to batch of the
// messages it has now, and returns them in order: all it got when the
// server says there are no more, when batch came, or after a second of
// silence; ctx's error if it ends first; an error for any other status.
func Fetch(ctx context.Context, nc *nats.Conn, subject string, batch int) ([]jetstream.Msg, error) {
	msgs := make(chan *nats.Msg, batch+16)
	sub, err := nc.ChanSubscribe(nc.NewInbox(), msgs)
	if err != nil {
		return nil, fmt.Errorf("jspull: subscribe: %w", err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	body, err := json.Marshal(request{Batch: batch, NoWait: true})
	if err != nil {
		return nil, fmt.Errorf("jspull: %w", err)
	}
	if err := nc.PublishRequest(subject, sub.Subject, body); err != nil {
		return nil, fmt.Errorf("jspull: fetch: %w", err)
	}
	var out []jetstream.Msg
	quiet := time.NewTimer(silence)
	defer quiet.Stop()
	for len(out) < batch {
		select {
		case m := <-msgs:
			quiet.Reset(silence)
			if strings.HasPrefix(m.Reply, ackPrefix) {
				out = append(out, &delivery{m: m, nc: nc})
				continue
			}
			switch code := m.Header.Get(statusHeader); code {
			case "", "100":
			case "404", "408":
				return out, nil
			default:
				return out, fmt.Errorf("jspull: fetch: %s %s", code, m.Header.Get(descriptionHeader))
			}
		case <-quiet.C:
			return out, nil
		case <-ctx.Done():
			return out, fmt.Errorf("jspull: fetch: %w", ctx.Err())
		}
	}
	return out, nil
}
