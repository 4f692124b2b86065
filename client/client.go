package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/internal/retry"
)

// Client publishes commands and waits for outcomes. It is safe for
// concurrent use.
type Client struct {
	nc    *nats.Conn
	js    jetstream.JetStream
	store *events.Store
	names events.Names
	actor string
	// system: this client is serve's own provisioning side; it may send
	// system reports, which go to <prefix>.sys.<workspace>.
	system bool
	inbox  string
	key    []byte // the actor key (Options.ActorKey)
	sub    *nats.Subscription
	mu     sync.Mutex
	wait   map[string]chan events.OutcomeRecord
	poll   time.Duration
	try    time.Duration // Options.RequestTimeout
}

// Options configure a Client.
type Options struct {
	Prefix string // subject prefix; "" means events.DefaultPrefix
	Actor  string // recorded with every command; "" means "client"
	// PollInterval is how often a waiting Send reads the stored outcome in
	// case the engine's direct reply was lost; 0 means 1s.
	PollInterval time.Duration
	// RequestTimeout bounds each request to JetStream (one try of a
	// publish, a read of a stored outcome) whatever the caller's context
	// allows; 0 means DefaultRequestTimeout. A request in flight when the
	// connection is lost is never answered: nats.go fails it only at its
	// context's end, so without this bound one publish would take all of
	// a command's timeout to report that NATS is away.
	RequestTimeout time.Duration
	// System makes a client for Turnstile's own provisioner, supervisor and
	// watcher: system reports (provision_succeeded, ...) are published on
	// <prefix>.sys.<workspace>, which only serve's own NATS user may write;
	// user commands still go to <prefix>.cmd.<workspace>. Without it, a
	// system report is refused as invalid before anything is published.
	System bool
	// ReplyPrefix is the subject prefix of the engine's direct replies to
	// this client; "" means the connection's inbox prefix (_INBOX by
	// default). The engine replies only under the prefixes it is
	// configured with (engine.Config.ReplyPrefixes); elsewhere the client
	// reads the stored outcome instead.
	ReplyPrefix string
	// ActorKey, the installation's actor key, makes the client prove the
	// actor of each command it publishes (events.ActorProofHeader): the
	// engine decides a command with an API actor ("api:<name>") only with
	// that proof. serve's HTTP API client alone holds it.
	ActorKey []byte
}

// New returns a client on an open connection. Close releases its subscription.
func New(ctx context.Context, nc *nats.Conn, o Options) (*Client, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	names := events.NewNames(o.Prefix)
	store, err := events.OpenStore(ctx, js, names, events.Codec{})
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	if o.Actor == "" {
		o.Actor = "client"
	}
	if o.PollInterval <= 0 {
		o.PollInterval = time.Second
	}
	if o.RequestTimeout <= 0 {
		o.RequestTimeout = DefaultRequestTimeout
	}
	inbox := nc.NewRespInbox()
	if o.ReplyPrefix != "" {
		inbox = o.ReplyPrefix + "." + strings.ReplaceAll(uuid.NewString(), "-", "")
	}
	c := &Client{nc: nc, js: js, store: store, names: names, actor: o.Actor, system: o.System, key: o.ActorKey,
		inbox: inbox, wait: make(map[string]chan events.OutcomeRecord), poll: o.PollInterval, try: o.RequestTimeout}
	c.sub, err = nc.Subscribe(c.inbox+".*", c.onReply)
	if err != nil {
		return nil, fmt.Errorf("client: subscribe: %w", err)
	}
	return c, nil
}

// DefaultRequestTimeout is Options.RequestTimeout's default: far above a
// JetStream acknowledgement's usual milliseconds, far below an API
// command's timeout (30s), which a publish's tries share.
const DefaultRequestTimeout = 2 * time.Second

// Close unsubscribes; the connection stays open.
func (c *Client) Close() error { return c.sub.Unsubscribe() }

// Store returns the event store the client reads outcomes and history from.
func (c *Client) Store() *events.Store { return c.store }

// ActorKey returns the actor key the client proves its commands' actors
// with (Options.ActorKey), nil when none: serve's API checks queued
// commands' API actors with it (api.Explain).
func (c *Client) ActorKey() []byte { return bytes.Clone(c.key) }

// Conn returns the connection the client was made on.
func (c *Client) Conn() *nats.Conn { return c.nc }

func (c *Client) onReply(m *nats.Msg) {
	o, err := events.DecodeOutcome(m.Data)
	if err != nil {
		return
	}
	c.mu.Lock()
	ch := c.wait[o.CommandID]
	c.mu.Unlock()
	if ch != nil {
		select {
		case ch <- o:
		default:
		}
	}
}

// NewCommandID returns a fresh command id: a UUIDv7, whose time lets the
// engine skip the lookup of its outcome (docs/operations.md, "Command ids
// that carry their time").
func NewCommandID() string { return uuid.Must(uuid.NewV7()).String() }

// Prepare fills in a command's id and actor if missing and validates it.
// A system report is refused unless the client was made with
// Options.System; its generated id is in fsm.SystemIDPrefix.
func (c *Client) Prepare(cmd fsm.Command) (fsm.Command, error) {
	if cmd.ID == "" {
		cmd.ID = NewCommandID()
		if cmd.Type.IsSystem() {
			cmd.ID = fsm.SystemIDPrefix + cmd.ID
		}
	}
	if cmd.Actor == "" {
		cmd.Actor = c.actor
	}
	if err := cmd.Validate(); err != nil {
		return cmd, err
	}
	if cmd.Type.IsSystem() && !c.system {
		return cmd, fsm.Invalid(cmd.Type, "%s is a system report: only Turnstile's own provisioner, supervisor and watcher send it", cmd.Type)
	}
	return cmd, nil
}

// Publish durably publishes cmd without waiting for its outcome. It returns
// the prepared command (with its id).
func (c *Client) Publish(ctx context.Context, cmd fsm.Command) (fsm.Command, error) {
	cmd, err := c.Prepare(cmd)
	if err != nil {
		return cmd, err
	}
	_, err = c.publish(ctx, cmd, false)
	return cmd, err
}

// publish reports whether the stream already had a command with this id.
func (c *Client) publish(ctx context.Context, cmd fsm.Command, reply bool) (bool, error) {
	b, err := events.EncodeCommand(cmd)
	if err != nil {
		return false, err
	}
	subject := c.names.Command(cmd.Workspace)
	if cmd.Type.IsSystem() { // only a system client gets here (Prepare)
		subject = c.names.System(cmd.Workspace)
	}
	m := nats.NewMsg(subject)
	m.Data = b
	m.Header.Set(jetstream.MsgIDHeader, cmd.ID)
	if reply {
		m.Header.Set(events.ReplyHeader, c.inbox+"."+cmd.ID)
	}
	for attempt := 0; ; attempt++ {
		if c.key != nil {
			// Made at each try: the engine takes a proof only within the
			// duplicate window of when its message is stored.
			m.Header.Set(events.ActorProofHeader, events.ActorProof(c.key, time.Now(), b))
		}
		tctx, cancel := context.WithTimeout(ctx, c.try)
		ack, err := c.js.PublishMsg(tctx, m)
		cancel()
		if err == nil {
			return ack.Duplicate, nil
		}
		// The same message id makes a retry safe; the pauses let it ride
		// out a reconnect (on a connection that buffers nothing across
		// one, such as serve's API's, a publish meanwhile fails at once)
		// or a leader change.
		err = c.timedOut(ctx, err)
		if errors.Is(err, nats.ErrReconnectBufExceeded) {
			err = fmt.Errorf("%w: %w", nats.ErrConnectionReconnecting, err) // unavailable, and retryable
		}
		if !events.IsRetryable(err) || ctx.Err() != nil || attempt >= 5 {
			return false, fmt.Errorf("publish %s %s: %w", cmd.Type, cmd.Workspace, err)
		}
		if err := retry.Sleep(ctx, retry.Backoff(attempt, 50*time.Millisecond, time.Second)); err != nil {
			return false, fmt.Errorf("publish %s %s: %w", cmd.Type, cmd.Workspace, err)
		}
	}
}

// ErrNoOutcome means the context ended before the command's outcome arrived.
// The command may still be handled later; Send it again with the same id to
// learn its outcome.
var ErrNoOutcome = errors.New("no outcome before the deadline")

// Send publishes cmd and waits for its outcome; a command whose id already
// has a stored outcome is answered from it without publishing. A rejection
// is returned as an outcome (Outcome == fsm.Rejected), not as an error:
// errors are for invalid input (a *fsm.Rejection with code invalid, before
// anything is published), transport failures, ErrNoOutcome, and
// *IDReusedError for an id that an earlier, different command used.
func (c *Client) Send(ctx context.Context, cmd fsm.Command) (events.OutcomeRecord, error) {
	return c.send(ctx, cmd, cmd.ID != "")
}

// SendNew is Send for a command whose id the caller has just made with
// NewCommandID: no command can have used it yet, so the lookup of a stored
// outcome, a round trip, is skipped.
func (c *Client) SendNew(ctx context.Context, cmd fsm.Command) (events.OutcomeRecord, error) {
	return c.send(ctx, cmd, false)
}

// send is Send; lookup asks for the stored outcome first.
func (c *Client) send(ctx context.Context, cmd fsm.Command, lookup bool) (events.OutcomeRecord, error) {
	cmd, err := c.Prepare(cmd)
	if err != nil {
		return events.OutcomeRecord{}, err
	}
	if lookup {
		// A caller-chosen id may have been used already (a retry, or a
		// reused key): answer from the stored outcome without publishing,
		// so a reused id leaves no trace even after the stream's
		// duplicate window. A failed lookup just falls through.
		if o, ok, err := c.outcome(ctx, cmd.ID); err == nil && ok {
			return o, reused(cmd, o)
		}
	}
	ch := make(chan events.OutcomeRecord, 1)
	c.mu.Lock()
	c.wait[cmd.ID] = ch
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.wait, cmd.ID)
		c.mu.Unlock()
	}()
	dup, err := c.publish(ctx, cmd, true)
	if err != nil {
		return events.OutcomeRecord{}, err
	}
	o, err := c.await(ctx, cmd.ID, ch, dup)
	if err != nil {
		return o, err
	}
	return o, reused(cmd, o)
}

// reused returns an *IDReusedError if o, the outcome stored under cmd's
// id, is another command's.
func reused(cmd fsm.Command, o events.OutcomeRecord) error {
	if o.Workspace != cmd.Workspace || o.CommandType != cmd.Type {
		return &IDReusedError{ID: cmd.ID, Type: cmd.Type, Workspace: cmd.Workspace, Outcome: o}
	}
	return nil
}

// IDReusedError means a command was sent under an id that an earlier,
// different command (another type or workspace) already used. Nothing was
// recorded for it: a command id has one outcome ever, the first command's,
// which Outcome holds. Send the command again under a new id.
type IDReusedError struct {
	ID        string
	Type      fsm.CommandType
	Workspace string
	Outcome   events.OutcomeRecord
}

func (e *IDReusedError) Error() string {
	return fmt.Sprintf("command id %s was already used for %s %s (outcome %s), so %s %s was not recorded: send it under a new id",
		e.ID, e.Outcome.CommandType, e.Outcome.Workspace, e.Outcome.Outcome, e.Type, e.Workspace)
}

// Outcome returns a command's stored outcome, waiting for it until ctx ends.
func (c *Client) Outcome(ctx context.Context, commandID string) (events.OutcomeRecord, error) {
	// An id that cannot have an outcome would otherwise be polled until
	// ctx ends and reported as ErrNoOutcome.
	if err := fsm.ValidateCommandID(commandID); err != nil {
		return events.OutcomeRecord{}, fsm.Invalid("", "%v", err)
	}
	return c.await(ctx, commandID, nil, true)
}

// await waits for id's outcome on ch (the engine's direct reply), reading
// the stored outcome every poll interval, and at once if readNow.
func (c *Client) await(ctx context.Context, id string, ch chan events.OutcomeRecord, readNow bool) (events.OutcomeRecord, error) {
	t := time.NewTimer(c.poll)
	defer t.Stop()
	if readNow {
		t.Reset(0)
	}
	for {
		select {
		case o := <-ch:
			return o, nil
		case <-ctx.Done():
			return events.OutcomeRecord{}, fmt.Errorf("command %s: %w: %w", id, ErrNoOutcome, ctx.Err())
		case <-t.C:
			// The direct reply can be lost (an engine restart, a resent
			// command whose first outcome went to someone else): read the
			// stored one.
			o, ok, err := c.outcome(ctx, id)
			if err == nil && ok {
				return o, nil
			}
			t.Reset(c.poll)
		}
	}
}

// outcome reads id's stored outcome within one request's time
// (Options.RequestTimeout): a read lost with the connection must not hold
// up a lookup that falls through, or an await whose direct reply arrives
// meanwhile.
func (c *Client) outcome(ctx context.Context, id string) (events.OutcomeRecord, bool, error) {
	tctx, cancel := context.WithTimeout(ctx, c.try)
	defer cancel()
	o, ok, err := c.store.Outcome(tctx, id)
	return o, ok, c.timedOut(ctx, err)
}

// timedOut marks err, from a request made under ctx within one request's
// time, as a timeout (nats.ErrTimeout: retryable, and NATS unavailable)
// when that time ran out before ctx did.
func (c *Client) timedOut(ctx context.Context, err error) error {
	if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
		return fmt.Errorf("%w: no answer within %v: %w", nats.ErrTimeout, c.try, err)
	}
	return err
}
