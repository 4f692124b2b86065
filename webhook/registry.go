package webhook

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/turnstile-dev/turnstile/events"
)

// AckWait is how long the server waits for a delivery's ack before it
// hands the event out again. The dispatcher sends an in-progress
// heartbeat every AckWait/3 while it tries an event, so it runs out only
// when the dispatcher is gone: an event in flight when serve crashed (or
// stopped together with its embedded NATS, which keeps no record of the
// hand-back) is tried again within AckWait.
const AckWait = 30 * time.Second

// BucketName is the KV bucket of the webhooks of installation n.
func BucketName(n events.Names) string { return strings.ToUpper(n.Prefix) + "_WEBHOOKS" }

// Durable is the name of webhook id's consumer on the event stream.
func Durable(id string) string { return "webhook-" + id }

// MarkerTTL is how long the purge marker that a Remove (or an Add's undo)
// leaves in the bucket stays there; the server then deletes it, and the
// key has no message at all. Without it every webhook ever removed kept a
// message in the bucket for good, which every read of the bucket (List,
// holdLimit, each watch) goes through.
//
// No reader needs a marker once it is gone, except a watch that is
// behind it:
//   - Get (Remove, stillStored, List) and revisions (List, holdLimit,
//     Add's check at the limit) read a key with no message as absent,
//     exactly as one whose last message is a marker.
//   - A dispatcher's watch starts (Open, and again whenever it ended)
//     with the bucket's current entries, and stops every runner whose
//     webhook is not among them (follow, stopAllBut): so a serve started
//     after the marker expired runs nothing for the webhook, whose
//     consumer Remove deleted before it purged.
//   - A live watch is pushed the marker as it is stored. It misses it
//     only if its ordered consumer is recreated past the marker after
//     the marker expired: its connection was cut for longer than
//     MarkerTTL (nats.go then resumes it after its last message, without
//     a new snapshot). A day covers any outage that a connection that
//     reconnects for ever comes back from in the normal course. For a
//     longer one, run does not rely on the marker: a runner that finds
//     neither its consumer nor its entry stops (see run).
//
// A day of markers is at most the removes of a day.
const MarkerTTL = 24 * time.Hour

// Registry stores webhooks (a KV bucket) and their consumers. It is safe
// for concurrent use.
type Registry struct {
	store        *events.Store
	kv           jetstream.KeyValue
	allowPrivate bool
	now          func() time.Time
	markerTTL    time.Duration
}

// RegistryOptions tune OpenRegistry.
type RegistryOptions struct {
	// AllowPrivate accepts webhook URLs of loopback, private and local
	// destinations (the dispatcher must be given the same).
	AllowPrivate bool
	// Memory keeps the bucket in memory (tests only).
	Memory bool
	// Replicas of the bucket: the installation's streams' (0 means 1).
	// Set at every open, so a bucket follows --replicas as the streams do.
	Replicas int
	// Now is the clock of Created and of the age of the markers that
	// OpenRegistry clears; default time.Now.
	Now func() time.Time
	// MarkerTTL is how long a removed webhook's purge marker stays in
	// the bucket; default MarkerTTL (tests shorten it; the server takes
	// no less than a second).
	MarkerTTL time.Duration
}

// OpenRegistry creates the bucket on js if it is missing, or updates it
// to this configuration, and binds to it; the webhooks' consumers are
// store's. A bucket made before purge markers expired (without
// LimitMarkerTTL, which lets its messages carry a TTL) is updated in
// place: the server allows turning message TTLs on in an existing stream
// (never off again, so an older serve no longer opens the bucket). The
// markers such a bucket already holds carry no TTL: those older than
// MarkerTTL are cleared here (see clearOldMarkers).
func OpenRegistry(ctx context.Context, js jetstream.JetStream, store *events.Store, o RegistryOptions) (*Registry, error) {
	n := store.Names()
	storage := jetstream.FileStorage
	if o.Memory {
		storage = jetstream.MemoryStorage
	}
	if o.MarkerTTL == 0 {
		o.MarkerTTL = MarkerTTL
	}
	if o.MarkerTTL < time.Second {
		return nil, fmt.Errorf("webhook: MarkerTTL %v is under the server's least, 1s", o.MarkerTTL)
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      BucketName(n),
		Description: "Turnstile webhooks and their signing secrets: serve's connections only",
		History:     1,
		Storage:     storage,
		Replicas:    o.Replicas,
		// The bucket has no TTL of its own and its entries none either:
		// this only lets the purge markers carry theirs (PurgeTTL). A
		// purge marker that expires leaves no marker of its own.
		LimitMarkerTTL: o.MarkerTTL,
	})
	if err != nil {
		return nil, fmt.Errorf("webhook bucket %s: %w", BucketName(n), err)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	r := &Registry{store: store, kv: kv, allowPrivate: o.AllowPrivate, now: o.Now, markerTTL: o.MarkerTTL}
	if err := r.clearOldMarkers(ctx, js); err != nil {
		return nil, err
	}
	return r, nil
}

// clearOldMarkers deletes the markers older than the registry's marker
// TTL: those an earlier version left without a TTL, which would stay for
// good. Clearing them is what their expiry would have done had they had
// one, so it is as safe as MarkerTTL (see there); younger ones are left
// to the watches that may still need them. It runs at every start (one
// read of the bucket, a write only for an old marker), so a serve that
// stopped before it finished clears the rest next time. Each marker is
// deleted by sequence, up to and including itself: an entry stored on
// its key after it would stay (ids are random, so none is).
func (r *Registry) clearOldMarkers(ctx context.Context, js jetstream.JetStream) error {
	cutoff := r.now().Add(-r.markerTTL)
	old := map[string]uint64{}
	err := r.readAll(ctx, func(e jetstream.KeyValueEntry) {
		if e.Operation() != jetstream.KeyValuePut && e.Created().Before(cutoff) {
			old[e.Key()] = e.Revision()
		}
	}, jetstream.MetaOnly())
	if err != nil {
		return fmt.Errorf("webhook bucket %s: list markers: %w", r.kv.Bucket(), err)
	}
	if len(old) == 0 {
		return nil
	}
	st, err := js.Stream(ctx, "KV_"+r.kv.Bucket())
	if err != nil {
		return fmt.Errorf("webhook bucket %s: %w", r.kv.Bucket(), err)
	}
	for key, rev := range old {
		subj := "$KV." + r.kv.Bucket() + "." + key
		if err := st.Purge(ctx, jetstream.WithPurgeSubject(subj), jetstream.WithPurgeSequence(rev+1)); err != nil {
			return fmt.Errorf("webhook bucket %s: clear the marker of %s: %w", r.kv.Bucket(), key, err)
		}
	}
	return nil
}

// Add stores a webhook for s and creates its consumer, which starts at
// the stream's end (or after s.Since): every event recorded after Add
// returns is delivered (and those after s.Since, if set). The answer
// holds the signing secret, the only time it is shown. A bad s is an
// *InvalidError, a Since past the stream's last sequence included (see
// checkSince); nothing is changed. So is an add past MaxWebhooks, which
// holds for concurrent adds too, from any serve on the bucket (see
// holdLimit): an add at the limit is refused before it writes anything,
// and one that only a concurrent add put over takes back its entry
// before it returns, and never made a consumer. An add whose webhook is
// removed before it returns (its id is listed from its entry on) is
// ErrNotFound, and leaves no consumer (see stillStored).
//
// The entry is stored first and the consumer made last, and whatever
// deletes them (Remove, undo) deletes the consumer first and the entry
// only once that succeeded: so a webhook consumer never stands without
// its entry, and whatever a failure leaves (a crash between the steps,
// NATS gone during the undo) is an entry, which List shows and Remove
// takes, consumer and all. Made the other way round, a consumer whose
// undo failed had no entry to start a Remove from. A dispatcher that
// sees the entry before its consumer exists waits for it (see run). A
// Remove between the two is the one moment a consumer can stand alone,
// until the Add or the Remove, whichever comes last, deletes it.
func (r *Registry) Add(ctx context.Context, s Spec) (Webhook, error) {
	s, err := checkSpec(s, r.allowPrivate)
	if err != nil {
		return Webhook{}, err
	}
	if err := r.checkSince(ctx, s.Since); err != nil {
		return Webhook{}, err
	}
	id, err := newID()
	if err != nil {
		return Webhook{}, err
	}
	secret, err := newSecret()
	if err != nil {
		return Webhook{}, err
	}
	h := Webhook{ID: id, URL: s.URL, Events: s.Events, Created: r.now().UTC().Round(time.Millisecond), Secret: secret}
	data, err := json.Marshal(h) //nolint:gosec // G117: the secret is stored on purpose, in the bucket only serve may read
	if err != nil {
		return Webhook{}, err
	}
	// A quick refusal before anything is written: each entry taken back
	// leaves a purge marker in the bucket's stream for MarkerTTL, which
	// every read of the bucket (List, holdLimit, the dispatcher's watch)
	// goes through, so a client retrying at the limit must not write.
	// The limit itself is held after the Create (holdLimit).
	revs, err := r.revisions(ctx)
	if err != nil {
		return Webhook{}, err
	}
	if len(revs) >= MaxWebhooks {
		return Webhook{}, full(len(revs))
	}
	rev, err := r.kv.Create(ctx, id, data)
	if err != nil {
		// The entry may stand all the same (ctx ended after the server
		// stored it): take it back, or it would count toward MaxWebhooks
		// with a secret no one was shown.
		if uerr := r.undo(ctx, id, false); uerr != nil {
			return Webhook{}, fmt.Errorf("%w: store webhook %s (take back: %v): %w", ErrUnavailable, id, uerr, err)
		}
		return Webhook{}, fmt.Errorf("%w: store webhook %s: %w", ErrUnavailable, id, err)
	}
	if err := r.holdLimit(ctx, rev); err != nil {
		if uerr := r.undo(ctx, id, false); uerr != nil {
			// Not an InvalidError: the entry may still stand.
			return Webhook{}, fmt.Errorf("%w: take back webhook %s (%v): %w", ErrUnavailable, id, err, uerr)
		}
		return Webhook{}, err
	}
	cfg := events.DurableConfig{
		Durable:     Durable(id),
		Description: "Turnstile webhook " + id,
		AckWait:     AckWait,
		// One at a time: deliveries stay in stream order.
		MaxAckPending: 1,
	}
	if err := r.store.CreateEventConsumer(ctx, cfg, s.Since); err != nil {
		// The server may have made the consumer and only the answer been
		// lost (ctx ended): take it back with the entry.
		if uerr := r.undo(ctx, id, true); uerr != nil {
			return Webhook{}, fmt.Errorf("%w: webhook %s (take back: %v): %w", ErrUnavailable, id, uerr, err)
		}
		return Webhook{}, fmt.Errorf("%w: webhook %s: %w", ErrUnavailable, id, err)
	}
	if err := r.stillStored(ctx, id, rev); err != nil {
		return Webhook{}, err
	}
	return h, nil
}

// checkSince refuses a since past the event stream's last sequence: the
// consumer would start after events not yet recorded and skip them when
// they are, every one up to since (a since of 999999 on a stream at 60
// delivered nothing before event 1000000). A since at the last sequence
// replays nothing, which is what it asks for. The last sequence is read
// once, before anything is written: the stream only grows, so a since it
// allows stays within the stream. An add whose since is a sequence being
// appended at that moment may be refused; it can be sent again.
func (r *Registry) checkSince(ctx context.Context, since *uint64) error {
	if since == nil {
		return nil
	}
	last, err := r.store.LastSeq(ctx)
	if err != nil {
		return fmt.Errorf("%w: check since: %w", ErrUnavailable, err)
	}
	if *since > last {
		return invalid("since", "%d is past the event stream's last sequence, %d: give 0 to %d, or leave since out for only the events recorded from now on",
			*since, last, last)
	}
	return nil
}

// stillStored checks, once Add made webhook id's consumer, that the
// entry it stored at revision rev still stands. The id is listed from
// the Create on, so a Remove may have come between the Create and the
// consumer: it found no consumer to delete and purged the entry, and the
// consumer made after it would stand without its entry, for a webhook
// whose Add answered a secret. Then the consumer is deleted and the add
// is ErrNotFound. A Remove whose purge comes after this read deletes the
// consumer itself, after its purge (see Remove).
func (r *Registry) stillStored(ctx context.Context, id string, rev uint64) error {
	e, err := r.kv.Get(ctx, id)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound) || err == nil && e.Revision() != rev:
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), undoTimeout)
		defer cancel()
		if derr := r.store.DeleteEventConsumer(dctx, Durable(id)); derr != nil {
			return fmt.Errorf("%w: webhook %s was removed while it was being added, and its consumer stays (rm %s takes it): %w", ErrUnavailable, id, id, derr)
		}
		return fmt.Errorf("webhook %s was removed while it was being added: %w", id, ErrNotFound)
	case err != nil:
		if uerr := r.undo(ctx, id, true); uerr != nil {
			return fmt.Errorf("%w: webhook %s (take back: %v): %w", ErrUnavailable, id, uerr, err)
		}
		return fmt.Errorf("%w: webhook %s: %w", ErrUnavailable, id, err)
	}
	return nil
}

// holdLimit refuses the entry stored at revision rev if it is over
// MaxWebhooks. Concurrent Adds, in this serve or in another on the same
// bucket, may store their entries at the same time. The bucket's stream
// orders their entries, the same for every serve, by revision: an entry
// with MaxWebhooks others before it is over, and its own Add takes it
// back. The list is read after the Create, so it holds every entry before
// rev that still stands; one that is taken back later only makes this a
// refusal to spare, and those before rev never count one after it, so
// they stand. (Not the Created times: they come from each serve's clock,
// so an entry stored later can carry an earlier time, and two Adds could
// each find the other over.) Entries never change after Add, so an
// entry's revision is that of its Create.
func (r *Registry) holdLimit(ctx context.Context, rev uint64) error {
	revs, err := r.revisions(ctx)
	if err != nil {
		return err
	}
	before := 0
	for _, v := range revs {
		if v < rev {
			before++
		}
	}
	if before >= MaxWebhooks {
		return full(before)
	}
	return nil
}

func full(n int) error {
	return invalid("url", "this installation has %d webhooks already, the most it may have", min(n, MaxWebhooks))
}

// undoTimeout bounds the undoing of a failed Add, which goes on after
// its caller has left.
const undoTimeout = 10 * time.Second

// undo takes back what a failed Add may have made: webhook id's consumer
// (if consumer: the Add got as far as asking for it), then its entry;
// it finishes whether or not the caller waits. Neither missing is an
// error. The entry goes only once the consumer is gone: if the
// consumer's deletion fails, the entry stays for Remove to finish the
// job (see Add).
func (r *Registry) undo(ctx context.Context, id string, consumer bool) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), undoTimeout)
	defer cancel()
	if consumer {
		if err := r.store.DeleteEventConsumer(ctx, Durable(id)); err != nil {
			return err
		}
	}
	// Purge, not Delete: the secret goes with the value.
	return r.purge(ctx, id)
}

// purge removes webhook id's entry, leaving a marker that expires after
// the registry's marker TTL (see MarkerTTL).
func (r *Registry) purge(ctx context.Context, id string) error {
	return r.kv.Purge(ctx, id, jetstream.PurgeTTL(r.markerTTL))
}

// Get returns webhook id, secret included (the dispatcher's read).
func (r *Registry) Get(ctx context.Context, id string) (Webhook, error) {
	if err := ValidateID(id); err != nil {
		return Webhook{}, err
	}
	e, err := r.kv.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Webhook{}, fmt.Errorf("webhook %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return Webhook{}, fmt.Errorf("%w: get webhook %s: %w", ErrUnavailable, id, err)
	}
	return decode(e.Value())
}

func decode(b []byte) (Webhook, error) {
	var h Webhook
	if err := json.Unmarshal(b, &h); err != nil {
		return Webhook{}, fmt.Errorf("stored webhook: %w", err)
	}
	if ValidateID(h.ID) != nil || h.Secret == "" {
		return Webhook{}, fmt.Errorf("stored webhook %q: no id or no secret", h.ID)
	}
	return h, nil
}

// revisions are the ids of the webhooks in the bucket, each with its
// entry's revision (its sequence in the bucket's stream). Unlike
// KeyValue.ListKeys, whose list just ends when ctx does, an incomplete
// list is an error.
func (r *Registry) revisions(ctx context.Context) (map[string]uint64, error) {
	revs := map[string]uint64{}
	err := r.readAll(ctx, func(e jetstream.KeyValueEntry) { revs[e.Key()] = e.Revision() },
		jetstream.IgnoreDeletes(), jetstream.MetaOnly())
	if err != nil {
		return nil, fmt.Errorf("%w: list webhooks: %w", ErrUnavailable, err)
	}
	return revs, nil
}

// readAll calls fn with each entry of the bucket as it stands (a watch read
// to its end), on this goroutine.
func (r *Registry) readAll(ctx context.Context, fn func(jetstream.KeyValueEntry), opts ...jetstream.WatchOpt) error {
	w, err := r.kv.WatchAll(ctx, opts...)
	if err != nil {
		return err
	}
	defer func() { _ = w.Stop() }()
	for {
		select {
		case e, ok := <-w.Updates():
			switch {
			case !ok:
				return errors.New("the watch ended")
			case e == nil: // the end of the entries there are
				return nil
			}
			fn(e)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// List returns every webhook, oldest first, without secrets, with where
// its delivery stands.
func (r *Registry) List(ctx context.Context) ([]Info, error) {
	revs, err := r.revisions(ctx)
	if err != nil {
		return nil, err
	}
	out := []Info{}
	for k := range revs {
		h, err := r.Get(ctx, k)
		if errors.Is(err, ErrNotFound) {
			continue // removed meanwhile
		}
		if err != nil {
			return nil, err
		}
		in := Info{ID: h.ID, URL: h.URL, Events: h.Events, Created: h.Created}
		ci, err := r.store.EventConsumer(ctx, Durable(h.ID))
		if err == nil {
			info := ci.CachedInfo()
			in.AckedStreamSeq = info.AckFloor.Stream
			in.Pending = info.NumPending + uint64(info.NumAckPending)
			in.Redelivered = info.NumRedelivered
		} else if !errors.Is(err, jetstream.ErrConsumerNotFound) {
			return nil, fmt.Errorf("%w: consumer of webhook %s: %w", ErrUnavailable, h.ID, err)
		}
		out = append(out, in)
	}
	slices.SortFunc(out, func(a, b Info) int {
		if c := a.Created.Compare(b.Created); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out, nil
}

// Remove deletes webhook id and its consumer: no delivery starts after it
// returns (one in flight may finish). ErrNotFound if there is neither.
//
// A consumer webhook-<id> without its entry is removed too: an Add of
// an earlier version made the consumer first and could leave it alone
// when its undo failed, and so can a Remove of an Add in progress whose
// last deletion failed (below).
//
// An Add in progress is listed from its entry on, before its consumer
// exists, so a Remove can come between the two: the consumer is deleted
// once more after the purge, which takes one the Add made after the
// first deletion; an Add that made its consumer after the purge finds
// its entry gone and deletes the consumer itself (see stillStored).
func (r *Registry) Remove(ctx context.Context, id string) error {
	_, err := r.Get(ctx, id)
	orphan := errors.Is(err, ErrNotFound)
	if err != nil && !orphan {
		return err
	}
	// Once begun, finish whether or not the caller waits (the NATS
	// client's own timeout bounds each step). The consumer goes first:
	// should the purge fail, the entry is still there for another remove
	// (see Add).
	ctx = context.WithoutCancel(ctx)
	if orphan {
		// DeleteEventConsumer does not tell whether there was one.
		if _, err := r.store.EventConsumer(ctx, Durable(id)); errors.Is(err, jetstream.ErrConsumerNotFound) {
			return fmt.Errorf("webhook %s: %w", id, ErrNotFound)
		} else if err != nil {
			return fmt.Errorf("%w: webhook %s: %w", ErrUnavailable, id, err)
		}
	}
	if err := r.store.DeleteEventConsumer(ctx, Durable(id)); err != nil {
		return fmt.Errorf("%w: webhook %s: %w", ErrUnavailable, id, err)
	}
	if orphan {
		return nil
	}
	// Purge, not Delete: the secret goes with the value.
	if err := r.purge(ctx, id); err != nil {
		return fmt.Errorf("%w: remove webhook %s: %w", ErrUnavailable, id, err)
	}
	// The Add of id may have made its consumer since the deletion above
	// and read its entry before the purge: it answered success and left
	// the consumer to this.
	if err := r.store.DeleteEventConsumer(ctx, Durable(id)); err != nil {
		return fmt.Errorf("%w: webhook %s: %w", ErrUnavailable, id, err)
	}
	return nil
}
