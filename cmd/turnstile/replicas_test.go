package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/internal/testenv"
	"github.com/turnstile-dev/turnstile/status"
)

// issue 13 items 1 and 4: --replicas is 1, 3 or 5; the embedded server
// takes 1 only; against a 3-node cluster (its own token auth) serve makes
// every stream R3, refuses R5 with a clear error instead of waiting, and
// `turnstile status` shows the nodes, leaders and replicas, and a killed
// node as offline.
func TestReplicasFlag(t *testing.T) {
	base := func() map[string]string {
		return map[string]string{"TURNSTILE_DATA_DIR": t.TempDir(), "TURNSTILE_PROVISIONER": "sim",
			"TURNSTILE_NATS_LISTEN": fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t)),
			"TURNSTILE_HTTP_ADDR":   fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t)),
			"TURNSTILE_LOG_FORMAT":  "text", "TURNSTILE_LOG_LEVEL": "warn"}
	}
	t.Run("ErrEvenCount", func(t *testing.T) {
		code, _, errs := runCLI(t, base(), "serve", "--replicas", "2")
		if code != exitUsage || !strings.Contains(errs, "use 1, 3 or 5") {
			t.Fatalf("exit %d, stderr %q", code, errs)
		}
	})
	t.Run("ErrEmbeddedReplicated", func(t *testing.T) {
		// Refused before serve starts anything: with its NATS port taken
		// (as by a test running beside it), the answer is still this one.
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		env := base()
		env["TURNSTILE_NATS_LISTEN"] = l.Addr().String()
		code, _, errs := runCLI(t, env, "serve", "--replicas", "3")
		if code != exitUsage || !strings.Contains(errs, "--nats-url to a NATS cluster") {
			t.Fatalf("exit %d, stderr %q", code, errs)
		}
	})

	const token = "cluster-token-0123456789abcdefghijklmnop"
	c := testenv.StartNATSCluster(t, testenv.ClusterOptions{Token: token})
	t.Run("ErrBeyondCluster", func(t *testing.T) {
		env := base()
		env["TURNSTILE_NATS_URL"], env["TURNSTILE_NATS_TOKEN"], env["TURNSTILE_PREFIX"] = c.URLs(), token, "five"
		begin := time.Now()
		code, _, errs := runCLI(t, env, "serve", "--replicas", "5")
		if code != exitError || !strings.Contains(errs, "5 replicas need at least 5 JetStream servers") {
			t.Fatalf("exit %d, stderr %q", code, errs)
		}
		t.Logf("refused in %v: %s", time.Since(begin), errs)
	})

	s := startInProcessServe(t, map[string]string{"TURNSTILE_NATS_URL": c.URLs(), "TURNSTILE_NATS_TOKEN": token, "TURNSTILE_REPLICAS": "3"})
	env := map[string]string{"TURNSTILE_NATS_URL": c.URLs(), "TURNSTILE_NATS_TOKEN": token, "TURNSTILE_DATA_DIR": s.dir}
	names := events.NewNames("")
	if code, out, errs := runCLI(t, env, "create", "replicated", "--wait"); code != 0 {
		t.Fatalf("create: exit %d\n%s%s", code, out, errs)
	}
	read := func() status.Report {
		t.Helper()
		code, out, errs := runCLI(t, env, "status", "-o", "json")
		if code != 0 {
			t.Fatalf("status: exit %d\n%s%s", code, out, errs)
		}
		var rep status.Report
		if err := json.Unmarshal([]byte(out), &rep); err != nil {
			t.Fatal(err)
		}
		return rep
	}
	rep := read()
	if len(rep.Nodes) != 3 {
		t.Errorf("nodes %+v, want 3", rep.Nodes)
	}
	for _, st := range rep.Streams {
		if st.Replicas != 3 || st.Leader == "" || len(st.Peers) != 2 {
			t.Errorf("stream %+v, want R3 with a leader and two other replicas", st)
		}
	}
	// Every stream serve made, the key-value buckets' too: one whose
	// node goes away must not take the webhooks or the actor key with it
	// (the webhooks' bucket was R1 on an R3 installation; found in review).
	nc, js := c.Connect(t)
	defer nc.Close()
	lctx, lcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer lcancel()
	var seen []string
	for info := range js.ListStreams(lctx).Info() {
		seen = append(seen, info.Config.Name)
		if info.Config.Replicas != 3 {
			t.Errorf("stream %s has %d replicas, want 3", info.Config.Name, info.Config.Replicas)
		}
	}
	if !slices.Contains(seen, "KV_TURNSTILE_WEBHOOKS") || !slices.Contains(seen, "KV_"+keysBucket(names)) {
		t.Errorf("streams %v: the webhooks' and keys' buckets missing", seen)
	}
	if code, out, errs := runCLI(t, env, "status"); code != 0 || !strings.Contains(out, names.EventStream()) || !strings.Contains(out, "turnstile-engine") {
		t.Fatalf("status: exit %d\n%s%s", code, out, errs)
	}

	// A node that is not the event stream's leader goes away: status
	// says its replica is offline (the leader notices within seconds).
	leader := c.WaitStreamLeader(t, names.EventStream(), 30*time.Second)
	victim := (leader + 1) % 3
	c.Kill(t, victim)
	testenv.Eventually(t, 30*time.Second, "status to report the killed node offline", func() bool {
		for _, n := range read().Nodes {
			if n.Name == c.Nodes()[victim].Name && n.Offline {
				return true
			}
		}
		return false
	})
	c.Restart(t, victim)
	c.WaitStreamCurrent(t, names.EventStream(), 30*time.Second)
}
