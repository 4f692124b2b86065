package e2e_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/turnstile-dev/turnstile/internal/testenv"
)

// TestRawNATSStorm (issue 12, acceptance): random raw NATS messages on
// every subject a user's NATS credential can reach — and on the ones it
// must not — with forged headers, system command types, reserved ids,
// garbage and oversized bodies. Afterwards no workspace is stuck (each
// takes a delete and a create to running), the projector's lag returns to
// 0, the read model agrees with the stream, and `audit --all` passes.
//
// TURNSTILE_STORM_SEED reproduces a run; TURNSTILE_STORM_N sizes it.
func TestRawNATSStorm(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	if v, err := strconv.ParseUint(os.Getenv("TURNSTILE_STORM_SEED"), 10, 64); err == nil {
		seed = v
	}
	n := 600
	if v, err := strconv.Atoi(os.Getenv("TURNSTILE_STORM_N")); err == nil {
		n = v
	}
	t.Logf("seed %d (TURNSTILE_STORM_SEED=%d reproduces it), %d messages", seed, seed, n)
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))

	srv := startServe(t, serveOptions{args: []string{"--provisioner", "sim", "--deadline-provisioning", "20s",
		"--deadline-stopping", "20s", "--deadline-deleting", "20s"}})
	known := []string{"storm-a", "storm-b", "storm-c", "storm-d"}
	for _, ws := range known {
		want(t, srv.turnstile(t, "create", ws, "--wait"), 0, "create "+ws)
	}
	var violations atomic.Int64
	nc := srv.userNATS(t, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		if errors.Is(err, nats.ErrPermissionViolation) {
			violations.Add(1)
		}
	}))

	subjects := func() string {
		ws := known[rng.IntN(len(known))]
		switch rng.IntN(12) {
		case 0:
			return "turnstile.cmd." + randomID(rng)
		case 1:
			return "turnstile.evt." + ws
		case 2:
			return "turnstile.out." + randomID(rng)
		case 3:
			return "turnstile.sys." + ws
		case 4:
			return "turnstile.cmd." + ws + ".extra"
		case 5:
			return []string{"$JS.API.STREAM.DELETE.TURNSTILE_EVENTS", "$JS.API.STREAM.PURGE.TURNSTILE_EVENTS",
				"$JS.API.STREAM.PURGE.TURNSTILE_COMMANDS", "$JS.API.CONSUMER.DELETE.TURNSTILE_COMMANDS.turnstile-engine",
				"$JS.API.STREAM.MSG.DELETE.TURNSTILE_EVENTS"}[rng.IntN(5)]
		default:
			return "turnstile.cmd." + ws
		}
	}
	for i := range n {
		subj := subjects()
		m := nats.NewMsg(subj)
		m.Data = stormBody(rng, known, subj)
		if rng.IntN(2) == 0 {
			m.Header.Set("Nats-Msg-Id", stormCommandID(rng, known))
		}
		if rng.IntN(4) == 0 {
			m.Header.Set("Turnstile-Reply", []string{"turnstile.evt." + known[0], "turnstile.out.x", "turnstile.cmd." + known[1],
				"_INBOX.storm", "$JS.API.STREAM.DELETE.TURNSTILE_EVENTS"}[rng.IntN(5)])
		}
		if rng.IntN(8) == 0 {
			m.Header.Set("Nats-Expected-Last-Subject-Sequence", strconv.Itoa(rng.IntN(50)))
		}
		if err := nc.PublishMsg(m); err != nil && i == 0 {
			t.Logf("publish %s: %v", subj, err)
		}
	}
	if err := nc.FlushTimeout(30 * time.Second); err != nil {
		t.Fatalf("flush: %v", err)
	}
	// The server refused the subjects the user role may not publish to
	// (evt, out, sys, the stream and consumer admin API) with a
	// permission violation; the connection stays usable for the rest.
	if n > 50 && violations.Load() == 0 {
		t.Fatalf("no permission violation among %d publishes, a sixth of them on forbidden subjects", n)
	}
	t.Logf("%d publishes refused by NATS permissions", violations.Load())

	// No workspace is stuck: each takes a delete and then a create that
	// reaches running (the deadline turns a wedged attempt into failed at
	// worst, which the delete then clears).
	for _, ws := range known {
		r := srv.turnstile(t, "delete", ws, "--wait", "--timeout", "2m")
		if r.code != 0 && r.code != 3 { // 3: refused, e.g. not_found after a random delete
			t.Fatalf("delete %s after the storm: %s", ws, r)
		}
		want(t, srv.turnstile(t, "create", ws, "--wait", "--timeout", "2m"), 0, "create "+ws+" after the storm")
	}
	srv.waitProjectorCaughtUp(t, 2*time.Minute)
	want(t, srv.turnstile(t, "audit", "--all"), 0, "audit --all after the storm")
	// Waited for: the lag gauge is set as a batch commits, so it can read
	// 0 before the last events are projected.
	for _, ws := range known {
		testenv.Eventually(t, 2*time.Minute, "the read model of "+ws+" to show it running", func() bool {
			r := srv.turnstile(t, "get", ws, "-o", "json")
			want(t, r, 0, "get "+ws)
			var w struct {
				Status string `json:"status"`
			}
			if err := json.Unmarshal([]byte(r.stdout), &w); err != nil {
				t.Fatalf("get %s after the storm: %v %s", ws, err, r.stdout)
			}
			return w.Status == "running"
		})
	}
}

func randomID(rng *rand.Rand) string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789-"
	b := make([]byte, 1+rng.IntN(12))
	for i := range b {
		b[i] = alphabet[rng.IntN(len(alphabet))]
	}
	b[0], b[len(b)-1] = 'r', 'x'
	return string(b)
}

func stormCommandID(rng *rand.Rand, known []string) string {
	ws := known[rng.IntN(len(known))]
	g := 1 + rng.IntN(4)
	return []string{
		fmt.Sprintf("provision-%s-g%d", ws, g), fmt.Sprintf("sys-provision-%s-g%d", ws, g),
		fmt.Sprintf("deadline-%s-g%d", ws, g), "invalid-1", fmt.Sprintf("storm-%d", rng.IntN(1000)),
		"", "has space", strings.Repeat("x", 300),
	}[rng.IntN(8)]
}

// stormBody is a command-like payload: valid user and system commands with
// random generations, and the malformed shapes the decoders must refuse.
func stormBody(rng *rand.Rand, known []string, subj string) []byte {
	ws := known[rng.IntN(len(known))]
	if i := strings.LastIndexByte(subj, '.'); i >= 0 && rng.IntN(3) > 0 {
		ws = subj[i+1:]
	}
	types := []string{"create", "start", "stop", "restart", "delete", "configure",
		"provision_succeeded", "provision_failed", "stop_succeeded", "stop_failed", "delete_succeeded",
		"delete_failed", "container_exited", "deadline_exceeded", "explode"}
	typ := types[rng.IntN(len(types))]
	switch rng.IntN(10) {
	case 0:
		return []byte(`{"garbage":true}`)
	case 1:
		return []byte(`{"id":"a","type":"create","type":"delete","workspace":"` + ws + `"}`)
	case 2:
		return []byte(`{"ID":"b","Type":"create","Workspace":"` + ws + `"}`)
	case 3:
		b := make([]byte, rng.IntN(2048))
		for i := range b {
			b[i] = byte(rng.UintN(256))
		}
		return b
	case 4:
		return []byte(`{"id":"big","type":"configure","workspace":"` + ws + `","spec":{"env":{"X":"` + strings.Repeat("y", 70<<10) + `"}}}`)
	default:
		c := map[string]any{"id": stormCommandID(rng, known), "type": typ, "workspace": ws, "generation": rng.IntN(5)}
		if rng.IntN(3) == 0 {
			c["container_id"] = "deadbeef"
		}
		if rng.IntN(3) == 0 {
			c["reason"] = "forged"
		}
		if typ == "configure" || typ == "create" {
			c["spec"] = map[string]any{"env": map[string]string{"N": strconv.Itoa(rng.IntN(100))}}
		}
		b, _ := json.Marshal(c)
		return b
	}
}

// waitProjectorCaughtUp polls /metrics until the projector's lag is 0.
func (s *server) waitProjectorCaughtUp(t *testing.T, within time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	for {
		status, body := s.httpDo(t, http.MethodGet, "/metrics", "", s.apiToken(t))
		if status == http.StatusOK && metricIs(string(body), "turnstile_projector_lag_messages", "0") {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("projector lag not 0 within %v:\n%s", within, grepLines(string(body), "turnstile_projector_"))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func metricIs(body, name, value string) bool {
	for _, line := range strings.Split(body, "\n") {
		if strings.HasPrefix(line, name) && !strings.HasPrefix(line, "#") {
			f := strings.Fields(line)
			return len(f) == 2 && f[1] == value
		}
	}
	return false
}

func grepLines(body, prefix string) string {
	var out []string
	for _, line := range strings.Split(body, "\n") {
		if strings.HasPrefix(line, prefix) {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}
