package engine_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/turnstile-dev/turnstile/engine"
	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/internal/testenv"
)

// logBuffer keeps what the engines log, for the test to look at.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) has(parts ...string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	for line := range strings.Lines(b.buf.String()) {
		if !strings.Contains(line, "level=ERROR") {
			continue
		}
		if !slices.ContainsFunc(parts, func(p string) bool { return !strings.Contains(line, p) }) {
			return true
		}
	}
	return false
}

// announceFake keeps an entry of an engine that pulls nothing in the
// members bucket, as raw, until the returned stop, which deletes it.
func announceFake(t *testing.T, js jetstream.JetStream, ttl time.Duration, raw []byte) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv, err := js.KeyValue(ctx, engine.MembersBucket(events.NewNames(""), events.DefaultEngineDurable))
	if err != nil {
		t.Fatal(err)
	}
	put := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := kv.Put(ctx, "fake", raw); err != nil {
			t.Errorf("announce the fake member: %v", err)
		}
	}
	put()
	done, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		tick := time.NewTicker(ttl / 5)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				put()
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			close(done)
			<-stopped
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := kv.Purge(ctx, "fake"); err != nil {
				t.Errorf("delete the fake member: %v", err)
			}
		})
	}
}

// splitAll: the engines pull every partition between them, none twice.
func splitAll(engines ...*engine.Engine) func() bool {
	return func() bool {
		var got []int
		for _, e := range engines {
			p := e.Partitions()
			if len(p) == 0 {
				return false
			}
			got = append(got, p...)
		}
		slices.Sort(got)
		return len(got) == events.DefaultPartitions && len(slices.Compact(got)) == events.DefaultPartitions
	}
}

// A live member announcing another P than this engine's: an assignment
// over the two would give it partitions it reads as other workspaces, so
// the engine takes nothing (a joining one pulls nothing) and gives nothing
// up, and logs why; once that member is gone it balances again.
func TestMemberWithAnotherP(t *testing.T) {
	logs := &logBuffer{}
	ttl := time.Second
	core := testenv.StartCore(t, testenv.CoreOptions{Engine: engine.Config{MemberTTL: ttl, PinnedTTL: 2 * time.Second,
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))}})
	first := core.Engines[0]
	if n := len(first.Partitions()); n != events.DefaultPartitions {
		t.Fatalf("a lone engine pulls %d partitions", n)
	}
	raw, err := json.Marshal(engine.Member{ID: "fake", Name: "fake/1", Since: time.Now().UTC(), Partitions: []int{}, P: 8})
	if err != nil {
		t.Fatal(err)
	}
	stop := announceFake(t, core.JS, ttl, raw)
	defer stop()
	// Its first look at the members is over when Open returns.
	second := core.StartEngine(t)
	if p := second.Partitions(); len(p) != 0 {
		t.Errorf("an engine with P=%d joining beside a member with P=8 took partitions %v", events.DefaultPartitions, p)
	}
	if !logs.has("disagree on the number of partitions", "P=8") {
		t.Errorf("no error logged naming the member's P=8:\n%s", logs.buf.String())
	}
	if n := len(first.Partitions()); n != events.DefaultPartitions {
		t.Errorf("the first engine let go of partitions for a member with another P: it pulls %d", n)
	}
	stop()
	testenv.Eventually(t, 20*time.Second, "the two engines splitting the partitions once the member is gone", splitAll(first, second))
}

// setStreamP records p as the command stream's P, as a start of another
// serve racing this one's would have.
func setStreamP(t *testing.T, js jetstream.JetStream, p string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, events.NewNames("").CommandStream())
	if err != nil {
		t.Fatal(err)
	}
	cfg := st.CachedInfo().Config
	cfg.Metadata["turnstile_partitions"] = p
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
}

// The command stream's P changed after the engine opened (another start
// updated it): the engine lets go of every partition, leaves the members
// and logs both values; when the stream's P is its own again it rejoins.
func TestStreamPChangedUnderTheEngine(t *testing.T) {
	logs := &logBuffer{}
	ttl := time.Second
	core := testenv.StartCore(t, testenv.CoreOptions{Engine: engine.Config{MemberTTL: ttl, PinnedTTL: 2 * time.Second,
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))}})
	e := core.Engines[0]
	names := events.NewNames("")
	members := func() int {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		ms, err := engine.ReadMembers(ctx, core.JS, names, events.DefaultEngineDurable)
		if err != nil {
			t.Fatal(err)
		}
		return len(ms)
	}
	setStreamP(t, core.JS, "8")
	testenv.Eventually(t, 20*time.Second, "the engine letting go of every partition and leaving the members", func() bool {
		return len(e.Partitions()) == 0 && members() == 0
	})
	if !logs.has("not the command stream's", "engine_partitions=16", "stream_partitions=8") {
		t.Errorf("no error logged naming both P:\n%s", logs.buf.String())
	}
	setStreamP(t, core.JS, "16")
	testenv.Eventually(t, 20*time.Second, "the engine taking every partition again", splitAll(e))
}
