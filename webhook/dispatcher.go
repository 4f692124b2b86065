package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	goretry "github.com/sethvargo/go-retry"

	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/internal/retry"
	"github.com/turnstile-dev/turnstile/internal/termsafe"
	"github.com/turnstile-dev/turnstile/internal/textcut"
)

// Config wires a Dispatcher. Store and Registry are required.
type Config struct {
	// Store reads and decodes the event stream.
	Store *events.Store
	// Registry holds the webhooks; the dispatcher follows its changes.
	Registry *Registry
	// Render describes an event for receivers (the API's event, with the
	// state before it and its cause); nil sends the stored envelope.
	Render func(ctx context.Context, env events.Envelope) (any, error)
	// AllowPrivate dials loopback, private and local destinations (tests,
	// receivers on the same network).
	AllowPrivate bool
	// AttemptTimeout bounds one attempt, connection to answer; default 10s.
	AttemptTimeout time.Duration
	// MinBackoff and MaxBackoff bound the wait between attempts, doubled
	// after each failure, with ±25% jitter; defaults 1s and 1m.
	MinBackoff, MaxBackoff time.Duration
	// UserAgent is sent with each delivery; default "Turnstile-Webhook/1".
	UserAgent  string
	Registerer prometheus.Registerer
	Logger     *slog.Logger
	// Now is the clock of signatures; default time.Now.
	Now func() time.Time
}

// Delivery is the JSON body of each POST.
type Delivery struct {
	// ID is <webhook>-<stream seq>: the same on every attempt and
	// redelivery of the event, for receivers to drop repeats.
	ID        string        `json:"id"`
	Webhook   string        `json:"webhook"`
	StreamSeq uint64        `json:"stream_seq"`
	Type      fsm.EventType `json:"type"`
	// Event is the event as GET /v1/events shows it: its workspace,
	// sequence, states, and cause.
	Event any `json:"event"`
}

// Dispatcher runs one delivery loop per webhook in its Registry, started
// and stopped as webhooks are added and removed. New starts nothing; Open
// starts; Close stops.
type Dispatcher struct {
	cfg     Config
	log     *slog.Logger
	m       *metrics
	http    *http.Client
	mu      sync.Mutex
	runners map[string]context.CancelFunc // by webhook id; guarded by mu
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

// New checks cfg and registers the metrics.
func New(cfg Config) (*Dispatcher, error) {
	if cfg.Store == nil || cfg.Registry == nil {
		return nil, errors.New("webhook: Config.Store and Config.Registry are required")
	}
	if cfg.AllowPrivate != cfg.Registry.allowPrivate {
		return nil, errors.New("webhook: the dispatcher and its registry disagree on AllowPrivate")
	}
	if cfg.AttemptTimeout <= 0 {
		cfg.AttemptTimeout = 10 * time.Second
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = time.Second
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = time.Minute
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		return nil, fmt.Errorf("webhook: MaxBackoff %v is shorter than MinBackoff %v", cfg.MaxBackoff, cfg.MinBackoff)
	}
	if cfg.UserAgent == "" {
		cfg.UserAgent = "Turnstile-Webhook/1"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	dialer := newDialer(cfg.AllowPrivate)
	tr := &http.Transport{
		Proxy:                 nil, // a proxy would dial for us, past the address check
		DialContext:           dialer.DialContext,
		ForceAttemptHTTP2:     true,
		TLSHandshakeTimeout:   cfg.AttemptTimeout,
		ResponseHeaderTimeout: cfg.AttemptTimeout,
		// The answer's headers are the receiver's to make as long as it
		// likes; net/http's default allows 10 MB.
		MaxResponseHeaderBytes: maxAnswerHeader,
		MaxIdleConnsPerHost:    2,
		IdleConnTimeout:        90 * time.Second,
	}
	hc := &http.Client{Transport: tr,
		// A redirect is an answer that is not 2xx: a receiver that moved
		// is updated by its owner, not followed somewhere else by serve.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	return &Dispatcher{cfg: cfg, log: cfg.Logger, m: m, http: hc, runners: map[string]context.CancelFunc{}}, nil
}

// Open starts following the registry: a delivery loop for each webhook
// there is, and for each one added later.
func (d *Dispatcher) Open(ctx context.Context) error {
	if d.cancel != nil {
		return errors.New("webhook: dispatcher already open")
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	// The watch lives as long as the dispatcher, not as ctx: Close ends it.
	w, err := d.cfg.Registry.kv.WatchAll(runCtx)
	if err != nil {
		cancel()
		return fmt.Errorf("webhook: watch %s: %w", BucketName(d.cfg.Store.Names()), err)
	}
	d.cancel = cancel
	d.wg.Go(func() { d.follow(runCtx, w) })
	return nil
}

// Close stops every delivery loop; an attempt in flight is abandoned
// unacked, so the event is delivered again by the next serve.
func (d *Dispatcher) Close() error {
	if d.cancel == nil {
		return nil
	}
	d.cancel()
	d.wg.Wait()
	d.cancel = nil
	d.http.CloseIdleConnections()
	return nil
}

// follow applies the bucket's changes until ctx ends, watching again if
// the watch ends on its own.
func (d *Dispatcher) follow(ctx context.Context, w jetstream.KeyWatcher) {
	defer d.stopAll()
	for failures := 0; ; {
		// seen collects the initial values of this watch, so that a
		// webhook removed while a previous watch was down is stopped.
		seen := map[string]bool{}
		for ctx.Err() == nil {
			var e jetstream.KeyValueEntry
			var ok bool
			select {
			case <-ctx.Done():
			case e, ok = <-w.Updates():
			}
			if ctx.Err() != nil || !ok {
				break
			}
			failures = 0
			if e == nil { // the end of the initial values
				if seen != nil {
					d.stopAllBut(seen)
					seen = nil
				}
				continue
			}
			if seen != nil && e.Operation() == jetstream.KeyValuePut {
				seen[e.Key()] = true
			}
			d.apply(ctx, e)
		}
		_ = w.Stop()
		if ctx.Err() != nil {
			return
		}
		d.log.Warn("webhook: the watch of the webhooks ended; watching again")
		var err error
		for {
			if retry.Sleep(ctx, retry.Backoff(failures, d.cfg.MinBackoff, d.cfg.MaxBackoff)) != nil {
				return
			}
			failures++
			if w, err = d.cfg.Registry.kv.WatchAll(ctx); err == nil {
				break
			}
			d.log.Warn("webhook: watch", "err", err)
		}
	}
}

func (d *Dispatcher) apply(ctx context.Context, e jetstream.KeyValueEntry) {
	id := e.Key()
	switch e.Operation() {
	case jetstream.KeyValueDelete, jetstream.KeyValuePurge:
		d.stop(id)
		d.log.Info("webhook removed", "webhook", id)
	case jetstream.KeyValuePut:
		h, err := decode(e.Value())
		if err != nil {
			d.log.Error("webhook: unreadable entry; not delivering to it", "key", id, "err", err)
			return
		}
		d.mu.Lock()
		defer d.mu.Unlock()
		if _, running := d.runners[id]; running {
			return // entries never change after Add
		}
		rctx, cancel := context.WithCancel(ctx)
		d.runners[id] = cancel
		d.wg.Go(func() { d.run(rctx, h) })
		d.log.Info("webhook delivering", "webhook", id, "destination", destination(h.URL))
	}
}

func (d *Dispatcher) stop(id string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if cancel, ok := d.runners[id]; ok {
		cancel()
		delete(d.runners, id)
	}
}

func (d *Dispatcher) stopAll() { d.stopAllBut(nil) }

// stopAllBut stops every runner whose webhook is not in keep.
func (d *Dispatcher) stopAllBut(keep map[string]bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for id, cancel := range d.runners {
		if !keep[id] {
			cancel()
			delete(d.runners, id)
		}
	}
}

// run delivers webhook h's events until ctx ends. It binds to the
// consumer Add made and never creates one: a missing consumer means the
// webhook is being added (Add stores the entry first) or removed, or
// that its Add failed and could not take the entry back; run tries
// again after a back-off, and warns only once that has gone on for a
// while. If the entry is gone too, the webhook was removed (an entry
// never comes back: ids are new at each Add) and run stops, as the purge
// marker would have stopped it: a watch that was cut off for longer than
// MarkerTTL resumes past the expired marker and never sees it.
//
// It fetches one message at a time rather than keeping a pull open (as
// Consumer.Messages does): with no pull outstanding while an event is
// tried, the event a stopping dispatcher hands back (Nak) waits for the
// next dispatcher instead of going to a pull of the stopping one, where
// it would sit out the ack wait.
func (d *Dispatcher) run(ctx context.Context, h Webhook) {
	log := d.log.With("webhook", h.ID)
	// The series goes with the runner (its webhook removed, or serve
	// stopping), after the runner's last update of it.
	defer d.m.lag.DeleteLabelValues(h.ID)
	var cons jetstream.Consumer
	for failures := 0; ctx.Err() == nil; {
		if failures > 0 && retry.Sleep(ctx, retry.Backoff(failures-1, d.cfg.MinBackoff, d.cfg.MaxBackoff)) != nil {
			return
		}
		if cons == nil {
			c, err := d.cfg.Store.EventConsumer(ctx, Durable(h.ID))
			if err != nil {
				if errors.Is(err, jetstream.ErrConsumerNotFound) && d.removed(ctx, h.ID) {
					log.Info("webhook removed")
					d.stop(h.ID) // this runner's own: no other starts for h.ID
					return
				}
				switch {
				case ctx.Err() != nil:
				case errors.Is(err, jetstream.ErrConsumerNotFound) && failures < quietBinds:
					log.Debug("webhook: no consumer yet", "err", err)
				default:
					log.Warn("webhook: bind consumer", "err", err)
				}
				failures++
				continue
			}
			cons = c
		}
		fctx, cancel := context.WithTimeout(ctx, fetchWait)
		batch, err := cons.Fetch(1, jetstream.FetchContext(fctx))
		var msg jetstream.Msg
		if err == nil {
			for m := range batch.Messages() {
				msg = m
			}
			err = batch.Error()
		}
		cancel()
		switch {
		case msg != nil:
			failures = 0
			d.handle(ctx, log, h, cons, msg)
		case ctx.Err() != nil:
			return
		case err == nil, errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout):
			// Nothing new: fetch again.
		case errors.Is(err, jetstream.ErrConsumerDeleted), errors.Is(err, jetstream.ErrConsumerNotFound),
			// A pull from a consumer deleted before it was asked: bind
			// again, which tells whether it is there.
			errors.Is(err, nats.ErrNoResponders):
			cons = nil
			failures++
		default:
			log.Debug("webhook: fetch", "err", err)
			failures++
		}
	}
}

// removed tells whether webhook id's entry is gone from the registry
// (false if that cannot be read now).
func (d *Dispatcher) removed(ctx context.Context, id string) bool {
	_, err := d.cfg.Registry.Get(ctx, id)
	return errors.Is(err, ErrNotFound)
}

// quietBinds is how many times in a row run finds no consumer before it
// warns: an Add in progress makes it a moment after its entry.
const quietBinds = 3

// fetchWait is how long one fetch waits for an event.
const fetchWait = 30 * time.Second

// handle carries one event to its end: delivered and acked, filtered and
// acked, unreadable and terminated, or abandoned unacked when ctx ends.
func (d *Dispatcher) handle(ctx context.Context, log *slog.Logger, h Webhook, cons jetstream.Consumer, m jetstream.Msg) {
	md, err := m.Metadata()
	if err != nil {
		log.Warn("webhook: message without metadata; skipped", "err", err)
		_ = m.Term()
		return
	}
	seq := md.Sequence.Stream
	d.m.lag.WithLabelValues(h.ID).Set(float64(md.NumPending + 1))
	env, err := d.cfg.Store.DecodeEvent(m.Subject(), m.Data())
	if err != nil {
		d.m.quarantined.Add(log, &events.Unreadable{StreamSeq: seq, Subject: m.Subject(), Time: md.Timestamp, Data: m.Data(), Err: err})
		_ = m.Term()
		d.m.lag.WithLabelValues(h.ID).Set(float64(md.NumPending))
		return
	}
	env.StreamSeq = seq
	result := ResultFiltered
	if matches(h.Events, env.Type) {
		stopBeat := heartbeat(m)
		dseq := md.Sequence.Consumer
		err := d.deliver(ctx, log, h, env, func(ctx context.Context) error { return d.stillOurs(ctx, h.ID, cons, dseq) })
		stopBeat()
		if errors.Is(err, errHandedOut) {
			// Another delivery has it now (this serve's heartbeats did not
			// reach the server for AckWait): that one carries it on, and
			// on past it; acking or handing it back would only race it.
			log.Warn("webhook: the event was handed out again while this serve tried it; left to that delivery", "stream_seq", seq)
			return
		}
		if err != nil {
			// Stopping: hand it back now, so the next dispatcher (a
			// restarted serve) need not wait out the ack wait.
			if err := m.Nak(); err != nil {
				log.Warn("webhook: hand back", "stream_seq", seq, "err", err)
			}
			log.Debug("webhook: stopping; handed back", "stream_seq", seq)
			return
		}
		result = ResultDelivered
	}
	actx, cancel := context.WithTimeout(ctx, d.cfg.AttemptTimeout)
	defer cancel()
	if err := m.DoubleAck(actx); err != nil {
		// Delivered but not acked: it comes again (at least once).
		log.Warn("webhook: ack", "stream_seq", seq, "err", err)
		return
	}
	d.m.deliveries.WithLabelValues(result).Inc()
	d.m.lag.WithLabelValues(h.ID).Set(float64(md.NumPending))
}

// deliver posts env to h until it answers 2xx or ctx ends, or still
// finds the event handed out again (errHandedOut).
// Before each attempt after the first it calls still: an attempt once
// another delivery has the event could reach the receiver after a later
// event that delivery went on to. still also refreshes the lag (the
// metadata's count is from when the event was handed out), so a failed
// attempt costs one consumer-info request, not two.
func (d *Dispatcher) deliver(ctx context.Context, log *slog.Logger, h Webhook, env events.Envelope, still func(context.Context) error) error {
	var body []byte
	attempt := 0
	n := 0
	backoff := goretry.WithJitterPercent(25, goretry.BackoffFunc(func() (time.Duration, bool) {
		n++
		return retry.Backoff(n-1, d.cfg.MinBackoff, d.cfg.MaxBackoff), false
	}))
	return goretry.Do(ctx, backoff, func(ctx context.Context) error {
		attempt++
		if attempt > 1 {
			if err := still(ctx); errors.Is(err, errHandedOut) {
				return err // not retryable: Do returns it
			} else if err != nil {
				// Whether it is still ours is unknown (NATS did not
				// answer, so neither may the heartbeats have): not posted.
				return d.failed(ctx, log, h, env, attempt, ReasonNATS, err)
			}
		}
		if body == nil {
			b, err := d.body(ctx, h, env)
			if err != nil {
				return d.failed(ctx, log, h, env, attempt, ReasonRender, err)
			}
			body = b
		}
		reason, err := d.post(ctx, h, env, body, attempt)
		if err != nil {
			return d.failed(ctx, log, h, env, attempt, reason, err)
		}
		return nil
	})
}

func (d *Dispatcher) failed(ctx context.Context, log *slog.Logger, h Webhook, env events.Envelope, attempt int, reason string, err error) error {
	if ctx.Err() != nil {
		return err // stopping, not a failure of the receiver
	}
	d.m.retries.WithLabelValues(reason).Inc()
	lvl := slog.LevelInfo
	if attempt%10 == 1 {
		lvl = slog.LevelWarn // the first failure and every tenth: a dead receiver must not flood the log
	}
	log.Log(ctx, lvl, "webhook delivery failed; retrying", "destination", destination(h.URL), "stream_seq", env.StreamSeq,
		"type", env.Type, "attempt", attempt, "reason", reason, "err", err)
	return goretry.RetryableError(err)
}

func (d *Dispatcher) body(ctx context.Context, h Webhook, env events.Envelope) ([]byte, error) {
	var ev any = env
	if d.cfg.Render != nil {
		var err error
		if ev, err = d.cfg.Render(ctx, env); err != nil {
			return nil, err
		}
	}
	b, err := json.Marshal(Delivery{ID: deliveryID(h.ID, env.StreamSeq), Webhook: h.ID, StreamSeq: env.StreamSeq, Type: env.Type, Event: ev})
	// C1, DEL and bidi controls (a container's text in a reason, a
	// user's label) as \u escapes, as the API's answers: the same value
	// to the receiver's decoder, inert in a log it prints the body to.
	return termsafe.JSON(b), err
}

// heartbeat tells the server every AckWait/3 that m is still being
// tried, so that it is not handed out again however long the receiver is
// down; the returned func stops it.
func heartbeat(m jetstream.Msg) func() {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(AckWait / 3)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				_ = m.InProgress()
			}
		}
	})
	return func() { close(done); wg.Wait() }
}

// errHandedOut means the event being tried was handed out again: its
// ack wait ran out without this serve's heartbeats reaching the server.
var errHandedOut = errors.New("the event was handed out again")

// stillOurs returns errHandedOut if the consumer has delivered anything
// since the delivery with consumer sequence dseq: with MaxAckPending 1
// nothing else is delivered while an event is pending, so a later
// delivery is that event handed out again (to another serve, or to this
// one's next fetch). It sets webhook id's lag from the same answer.
func (d *Dispatcher) stillOurs(ctx context.Context, id string, cons jetstream.Consumer, dseq uint64) error {
	ictx, cancel := context.WithTimeout(ctx, d.cfg.AttemptTimeout)
	defer cancel()
	info, err := cons.Info(ictx)
	if err != nil {
		return fmt.Errorf("is the event still ours: %w", err)
	}
	d.m.lag.WithLabelValues(id).Set(float64(info.NumPending + uint64(info.NumAckPending)))
	if info.Delivered.Consumer > dseq {
		return errHandedOut
	}
	return nil
}

func deliveryID(webhook string, seq uint64) string {
	return webhook + "-" + strconv.FormatUint(seq, 10)
}

// post makes one attempt; on failure it says why (a retries reason).
func (d *Dispatcher) post(ctx context.Context, h Webhook, env events.Envelope, body []byte, attempt int) (string, error) {
	actx, cancel := context.WithTimeout(ctx, d.cfg.AttemptTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(actx, http.MethodPost, h.URL, bytes.NewReader(body))
	if err != nil {
		return ReasonTransport, attemptError{withoutURL(err)}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", d.cfg.UserAgent)
	req.Header.Set(HeaderSignature, Sign(h.Secret, d.cfg.Now(), body))
	req.Header.Set(HeaderDelivery, deliveryID(h.ID, env.StreamSeq))
	req.Header.Set(HeaderWebhook, h.ID)
	req.Header.Set(HeaderEventSeq, strconv.FormatUint(env.StreamSeq, 10))
	req.Header.Set(HeaderEventType, string(env.Type))
	req.Header.Set(HeaderAttempt, strconv.Itoa(attempt))
	resp, err := d.http.Do(req)
	if err != nil {
		err = attemptError{withoutURL(err)}
		if errors.Is(err, ErrForbiddenAddress) {
			return ReasonForbidden, err
		}
		return ReasonTransport, err
	}
	// Read a little so the connection can be reused; the answer's body
	// means nothing.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		// The status text is the receiver's: only a little of it is told.
		text := strings.TrimPrefix(resp.Status, strconv.Itoa(resp.StatusCode)+" ")
		return ReasonStatus, fmt.Errorf("answered %d %q", resp.StatusCode, clip(text, maxStatusText))
	}
	return "", nil
}

// Bounds on what a receiver makes serve read and log.
const (
	maxAnswerHeader = 64 << 10 // the answer's status line and headers
	maxStatusText   = 64       // the status text quoted in a log
	maxErrText      = 256      // an attempt's error in a log
)

// withoutURL is err without the request's URL, which net/http's errors
// (*url.Error) quote whole: its path or query may carry the receiver's
// own token, and logs name a receiver only by its destination.
func withoutURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// attemptError is a failed attempt's error cut to maxErrText: its text
// may quote what the receiver sent (a malformed status line).
type attemptError struct{ err error }

func (e attemptError) Error() string { return clip(e.err.Error(), maxErrText) }
func (e attemptError) Unwrap() error { return e.err }

// clip cuts s to at most n bytes, on a rune boundary, marking the cut.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return textcut.Prefix(s, n) + "…"
}

// destination is what the logs say of a receiver URL: its scheme and
// host. A path or query may carry the receiver's own token.
func destination(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable)"
	}
	return u.Scheme + "://" + u.Host
}
