package events

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
)

// Partitions. The command and system report streams store a workspace's
// messages under <prefix>.cmd.<partition>.<ws> (and .sys.), where partition
// is the NATS subject mapping function partition(P, ws): publishers keep
// publishing on <prefix>.cmd.<ws> and the stream's subject transform adds
// the partition. Each partition has its own engine consumer, and one engine
// owns it at a time (engine/owner.go). P is fixed when the streams are
// created and recorded in the command stream's metadata: a different P
// would move workspaces to other partitions, and so to other engines,
// while their commands wait.

// DefaultPartitions is P when none is given at install.
const DefaultPartitions = 16

// MaxPartitions bounds P: each partition is two durable consumers, whose
// names the embedded server's roles list.
const MaxPartitions = 64

// partitionsKey is the command stream's metadata entry holding P.
const partitionsKey = "turnstile_partitions"

// ErrPartitions is returned when the streams were created with another
// number of partitions than asked for.
var ErrPartitions = errors.New("partitions differ from the streams'")

// ValidatePartitions checks P.
func ValidatePartitions(p int) error {
	if p < 1 || p > MaxPartitions {
		return fmt.Errorf("partitions %d: want 1 to %d", p, MaxPartitions)
	}
	return nil
}

// Partition is the partition of workspace id among p: what the server's
// partition(p, id) mapping computes (FNV-1a of the id, modulo p).
func Partition(id string, p int) int {
	h := fnv.New32a()
	_, _ = h.Write([]byte(id))
	return int(h.Sum32() % uint32(p))
}

// CommandsIn matches the stored commands of partition k.
func (n Names) CommandsIn(k int) string { return n.Prefix + ".cmd." + strconv.Itoa(k) + ".*" }

// SystemsIn matches the stored system reports of partition k.
func (n Names) SystemsIn(k int) string { return n.Prefix + ".sys." + strconv.Itoa(k) + ".*" }

// StoredCommands matches workspace id's stored commands, whatever its
// partition.
func (n Names) StoredCommands(id string) string { return n.Prefix + ".cmd.*." + id }

// PartitionOf returns the partition a stored command or system report
// subject names; false if it names none.
func (n Names) PartitionOf(subject string) (int, bool) {
	var rest string
	switch {
	case strings.HasPrefix(subject, n.Prefix+".cmd."):
		rest = subject[len(n.Prefix)+5:]
	case strings.HasPrefix(subject, n.Prefix+".sys."):
		rest = subject[len(n.Prefix)+5:]
	default:
		return 0, false
	}
	i := strings.IndexByte(rest, '.')
	if i < 0 {
		return 0, false
	}
	k, err := strconv.Atoi(rest[:i])
	if err != nil || k < 0 {
		return 0, false
	}
	return k, true
}

// DefaultEngineDurable is the engines' durable name unless serve is
// configured otherwise: their consumers are DefaultEngineDurable-pNN and
// their members bucket is named after it. The one place it is spelled.
const DefaultEngineDurable = "turnstile-engine"

// EngineConsumer is the name of the engine's durable consumer of partition
// k on the command and system report streams, for engines named durable.
func EngineConsumer(durable string, k int) string { return fmt.Sprintf("%s-p%02d", durable, k) }

// partitionTransform makes the stream store <prefix>.<kind>.<ws> as
// <prefix>.<kind>.<partition>.<ws>.
func partitionTransform(prefix, kind string, p int) *jetstream.SubjectTransformConfig {
	return &jetstream.SubjectTransformConfig{
		Source:      prefix + "." + kind + ".*",
		Destination: fmt.Sprintf("%s.%s.{{partition(%d,1)}}.{{wildcard(1)}}", prefix, kind, p),
	}
}

// ReadPartitions returns P as the command stream records it.
func ReadPartitions(ctx context.Context, js jetstream.JetStream, n Names) (int, error) {
	st, err := js.Stream(ctx, n.CommandStream())
	if err != nil {
		return 0, fmt.Errorf("command stream %s: %w", n.CommandStream(), err)
	}
	return PartitionsOf(st.CachedInfo().Config, n)
}

// PartitionsOf is ReadPartitions on a command stream's configuration
// already at hand.
func PartitionsOf(cfg jetstream.StreamConfig, n Names) (int, error) {
	v, ok := cfg.Metadata[partitionsKey]
	if !ok {
		return 0, fmt.Errorf("command stream %s has no %s metadata: it was made before partitions; serve updates it at start", n.CommandStream(), partitionsKey)
	}
	p, err := strconv.Atoi(v)
	if err != nil || ValidatePartitions(p) != nil {
		return 0, fmt.Errorf("command stream %s: metadata %s=%q: want 1 to %d", n.CommandStream(), partitionsKey, v, MaxPartitions)
	}
	return p, nil
}

// ensurePartitions returns the P the streams are to have: want, or the
// existing command stream's when want is 0; fresh: there is no command
// stream yet; legacy: the streams were made before partitions and this
// start is taking them over (the caller checks the update with
// checkTakeover). Streams made before partitions
// are taken over only when no engine consumer of theirs has work left (they
// are then deleted: the partition consumers replace them); otherwise start
// the release they were made with until its engines are done.
//
// A stream update does not compare the configuration it replaces, so two
// starts that both found no P recorded would each write their own, the
// last one standing while the first one's engine may already run with its
// P. The takeover's P is therefore claimed first (claimPartitions), and
// every start that goes on to update takes the claimed one.
// afterCheck, if set, runs once no P was found recorded (tests).
func ensurePartitions(ctx context.Context, js jetstream.JetStream, n Names, want int, afterCheck func()) (parts int, fresh, legacy bool, err error) {
	if want != 0 {
		if err := ValidatePartitions(want); err != nil {
			return 0, false, false, fmt.Errorf("ensure streams: %w", err)
		}
	}
	st, err := js.Stream(ctx, n.CommandStream())
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return cmp.Or(want, DefaultPartitions), true, false, nil
	}
	if err != nil {
		return 0, false, false, fmt.Errorf("ensure streams: %s: %w", n.CommandStream(), err)
	}
	if have, ok, err := recordedPartitions(st.CachedInfo().Config, n, want); ok || err != nil {
		return have, false, false, err
	}
	if afterCheck != nil {
		afterCheck()
	}
	parts, err = claimPartitions(ctx, js, n, want)
	if err != nil {
		return 0, false, false, err
	}
	// A takeover may have finished since the check (and deleted its claim,
	// which this one then replaced): the P it recorded stands, and the
	// claim has no more work.
	if st, err = js.Stream(ctx, n.CommandStream()); err != nil {
		return 0, false, false, fmt.Errorf("ensure streams: %s: %w", n.CommandStream(), err)
	}
	if have, ok, err := recordedPartitions(st.CachedInfo().Config, n, want); ok || err != nil {
		dropClaim(ctx, js, n)
		return have, false, false, err
	}
	// Both streams checked before either is touched.
	old := map[string][]string{}
	for _, name := range []string{n.CommandStream(), n.SystemStream()} {
		names, err := legacyConsumers(ctx, js, name, n)
		if err != nil {
			return 0, false, false, err
		}
		old[name] = names
	}
	for stream, names := range old {
		for _, c := range names {
			if err := js.DeleteConsumer(ctx, stream, c); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
				return 0, false, false, fmt.Errorf("ensure streams: %s: delete consumer %s made before partitions: %w", stream, c, err)
			}
		}
	}
	return parts, false, true, nil
}

// recordedPartitions returns the P the command stream's configuration
// records (ok), refusing want if it is another; not ok if none is.
func recordedPartitions(cfg jetstream.StreamConfig, n Names, want int) (have int, ok bool, err error) {
	if _, ok := cfg.Metadata[partitionsKey]; !ok {
		return 0, false, nil
	}
	have, err = PartitionsOf(cfg, n)
	if err != nil {
		return 0, false, fmt.Errorf("ensure streams: %w", err)
	}
	if want != 0 && want != have {
		return 0, false, fmt.Errorf("ensure streams: %w: asked for %d, %s has %d; P is fixed at install", ErrPartitions, want, n.CommandStream(), have)
	}
	return have, true, nil
}

// PartitionsClaim is the durable consumer of the command stream whose
// metadata holds the P a takeover of streams made before partitions is
// setting. It reads nothing: it exists for its create, which the server
// refuses when a consumer of that name exists with another configuration,
// so one P is claimed at a time. The takeover that sees its P recorded
// deletes it; one that fails leaves it, so a later start takes the same P.
const PartitionsClaim = "turnstile-partitions-claim"

func claimConfig(p int) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable: PartitionsClaim,
		Description: fmt.Sprintf("Turnstile: P=%d is being set on streams made before partitions; "+
			"deleted once the command stream records it", p),
		DeliverPolicy: jetstream.DeliverNewPolicy,
		AckPolicy:     jetstream.AckNonePolicy,
		Metadata:      map[string]string{partitionsKey: strconv.Itoa(p)},
	}
}

// claimPartitions claims P for taking over streams made before
// partitions: want, or when want is 0 the P another start has claimed, or
// DefaultPartitions. A claim of another P than want is refused with
// ErrPartitions.
func claimPartitions(ctx context.Context, js jetstream.JetStream, n Names, want int) (int, error) {
	p := cmp.Or(want, DefaultPartitions)
	for range 3 {
		_, err := js.CreateConsumer(ctx, n.CommandStream(), claimConfig(p))
		if err == nil {
			return p, nil
		}
		if !errors.Is(err, jetstream.ErrConsumerExists) {
			return 0, fmt.Errorf("ensure streams: %s: claim P=%d for streams made before partitions: %w", n.CommandStream(), p, err)
		}
		c, err := js.Consumer(ctx, n.CommandStream(), PartitionsClaim)
		if errors.Is(err, jetstream.ErrConsumerNotFound) {
			continue // its takeover ended meanwhile
		}
		if err != nil {
			return 0, fmt.Errorf("ensure streams: %s: consumer %s: %w", n.CommandStream(), PartitionsClaim, err)
		}
		v := c.CachedInfo().Config.Metadata[partitionsKey]
		have, err := strconv.Atoi(v)
		if err != nil || ValidatePartitions(have) != nil {
			return 0, fmt.Errorf("ensure streams: %s: consumer %s has metadata %s=%q: want 1 to %d; delete it if no serve is starting",
				n.CommandStream(), PartitionsClaim, partitionsKey, v, MaxPartitions)
		}
		if want != 0 && want != have {
			return 0, fmt.Errorf("ensure streams: %w: asked for %d, but another start is taking over %s (made before partitions) with %d "+
				"(consumer %s records it): start with --partitions %d or none; if no other serve is starting, delete that consumer",
				ErrPartitions, want, n.CommandStream(), have, PartitionsClaim, have)
		}
		p = have
	}
	return 0, fmt.Errorf("ensure streams: %s: consumer %s kept changing while claiming P; try again", n.CommandStream(), PartitionsClaim)
}

// checkTakeover reads the command stream after a takeover's update: if it
// records another P than parts, a start that did not claim (a release
// before the claim) updated it meanwhile, and this start must not run with
// parts. Once it records parts, the claim has done its work.
func checkTakeover(ctx context.Context, js jetstream.JetStream, n Names, parts int) error {
	st, err := js.Stream(ctx, n.CommandStream())
	if err != nil {
		return fmt.Errorf("ensure streams: %s: %w", n.CommandStream(), err)
	}
	have, err := PartitionsOf(st.CachedInfo().Config, n)
	if err != nil {
		return fmt.Errorf("ensure streams: after the update: %w", err)
	}
	if have != parts {
		return fmt.Errorf("ensure streams: %w: this start set %d on %s (made before partitions), and another start set %d meanwhile: "+
			"stop every serve, then start them with one --partitions (or none)", ErrPartitions, parts, n.CommandStream(), have)
	}
	dropClaim(ctx, js, n)
	return nil
}

// dropClaim deletes the claim once the command stream records P. A claim
// left (the delete failed) is harmless: a start reads the recorded P first.
func dropClaim(ctx context.Context, js jetstream.JetStream, n Names) {
	_ = js.DeleteConsumer(ctx, n.CommandStream(), PartitionsClaim)
}

// legacyConsumers returns the durable consumers of stream that read every
// command (<prefix>.cmd.> or .sys.>, as engines did before partitions),
// refusing if one still has commands to deliver or to ack, or a client
// pulling (an old serve still running).
func legacyConsumers(ctx context.Context, js jetstream.JetStream, stream string, n Names) ([]string, error) {
	st, err := js.Stream(ctx, stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("ensure streams: %s: %w", stream, err)
	}
	var old []*jetstream.ConsumerInfo
	lister := st.ListConsumers(ctx)
	for ci := range lister.Info() { // read to the end: the lister's goroutine waits
		if f := ci.Config.FilterSubject; ci.Config.Durable != "" && (f == n.Commands() || f == n.Systems()) {
			old = append(old, ci)
		}
	}
	if err := lister.Err(); err != nil {
		return nil, fmt.Errorf("ensure streams: %s: consumers: %w", stream, err)
	}
	if len(old) == 0 {
		return nil, nil
	}
	// The server counts a consumer's pending messages after it has acked
	// the publish, so a command just published may not be in NumPending
	// yet: what the stream holds past the consumer's ack floor is counted
	// too (the consumer reads every subject of the stream). The stream's
	// state is read after the consumers', so a command published between
	// the two reads counts as undecided: the safe side.
	info, err := st.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("ensure streams: %s: %w", stream, err)
	}
	state := info.State
	var legacy []string
	for _, ci := range old {
		var unacked uint64
		if state.Msgs > 0 && state.LastSeq > ci.AckFloor.Stream {
			unacked = state.LastSeq - max(ci.AckFloor.Stream, state.FirstSeq-1)
		}
		if ci.NumPending != 0 || ci.NumAckPending != 0 || ci.NumWaiting != 0 || unacked != 0 {
			return nil, fmt.Errorf("ensure streams: %s was made before partitions and its consumer %s still has %d commands to deliver, "+
				"%d to finish, %d past its ack floor and %d pulls waiting: stop every serve of the release that made it once they are done "+
				"(turnstile status shows them), then start this one", stream, ci.Name, ci.NumPending, ci.NumAckPending, unacked, ci.NumWaiting)
		}
		legacy = append(legacy, ci.Name)
	}
	return legacy, nil
}
