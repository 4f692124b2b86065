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
// stream yet. Streams made before partitions
// are taken over only when no engine consumer of theirs has work left (they
// are then deleted: the partition consumers replace them); otherwise start
// the release they were made with until its engines are done.
func ensurePartitions(ctx context.Context, js jetstream.JetStream, n Names, want int) (parts int, fresh bool, err error) {
	if want != 0 {
		if err := ValidatePartitions(want); err != nil {
			return 0, false, fmt.Errorf("ensure streams: %w", err)
		}
	}
	st, err := js.Stream(ctx, n.CommandStream())
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return cmp.Or(want, DefaultPartitions), true, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("ensure streams: %s: %w", n.CommandStream(), err)
	}
	if _, ok := st.CachedInfo().Config.Metadata[partitionsKey]; ok {
		have, err := PartitionsOf(st.CachedInfo().Config, n)
		if err != nil {
			return 0, false, fmt.Errorf("ensure streams: %w", err)
		}
		if want != 0 && want != have {
			return 0, false, fmt.Errorf("ensure streams: %w: asked for %d, %s has %d; P is fixed at install", ErrPartitions, want, n.CommandStream(), have)
		}
		return have, false, nil
	}
	// Both streams checked before either is touched.
	legacy := map[string][]string{}
	for _, name := range []string{n.CommandStream(), n.SystemStream()} {
		names, err := legacyConsumers(ctx, js, name, n)
		if err != nil {
			return 0, false, err
		}
		legacy[name] = names
	}
	for stream, names := range legacy {
		for _, c := range names {
			if err := js.DeleteConsumer(ctx, stream, c); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
				return 0, false, fmt.Errorf("ensure streams: %s: delete consumer %s made before partitions: %w", stream, c, err)
			}
		}
	}
	return cmp.Or(want, DefaultPartitions), false, nil
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
