package jspull

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// delivery is a message a consumer delivered, acked on its reply subject
// as jetstream's own messages are.
type delivery struct {
	m    *nats.Msg
	nc   *nats.Conn
	ackd atomic.Bool
}

var _ jetstream.Msg = (*delivery)(nil)

func (d *delivery) Data() []byte         { return d.m.Data }
func (d *delivery) Headers() nats.Header { return d.m.Header }
func (d *delivery) Subject() string      { return d.m.Subject }
func (d *delivery) Reply() string        { return d.m.Reply }
func (d *delivery) Ack() error           { return d.reply("+ACK", true) }
func (d *delivery) Nak() error           { return d.reply("-NAK", true) }
func (d *delivery) InProgress() error    { return d.reply("+WPI", false) }
func (d *delivery) Term() error          { return d.reply("+TERM", true) }
func (d *delivery) TermWithReason(r string) error {
	return d.reply("+TERM "+r, true)
}

func (d *delivery) NakWithDelay(delay time.Duration) error {
	return d.reply(fmt.Sprintf(`-NAK {"delay": %d}`, delay.Nanoseconds()), true)
}

// DoubleAck acks and waits for the server to confirm it.
func (d *delivery) DoubleAck(ctx context.Context) error {
	if d.ackd.Load() {
		return jetstream.ErrMsgAlreadyAckd
	}
	if _, err := d.nc.RequestWithContext(ctx, d.m.Reply, []byte("+ACK")); err != nil {
		return fmt.Errorf("ack: %w", err)
	}
	d.ackd.Store(true)
	return nil
}

// reply sends an acknowledgement of kind body; final ones (all but in
// progress) are sent once.
func (d *delivery) reply(body string, final bool) error {
	if d.ackd.Load() {
		return jetstream.ErrMsgAlreadyAckd
	}
	if err := d.nc.Publish(d.m.Reply, []byte(body)); err != nil {
		return fmt.Errorf("ack: %w", err)
	}
	if final {
		d.ackd.Store(true)
	}
	return nil
}

// Metadata reads the delivery's stream, consumer, sequences, count and
// time from its reply subject.
func (d *delivery) Metadata() (*jetstream.MsgMetadata, error) {
	md, err := d.m.Metadata()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", jetstream.ErrNotJSMessage, err)
	}
	out := &jetstream.MsgMetadata{
		NumDelivered: md.NumDelivered,
		NumPending:   md.NumPending,
		Timestamp:    md.Timestamp,
		Stream:       md.Stream,
		Consumer:     md.Consumer,
		Domain:       md.Domain,
	}
	out.Sequence.Stream, out.Sequence.Consumer = md.Sequence.Stream, md.Sequence.Consumer
	return out, nil
}
