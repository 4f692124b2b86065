package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/system"

	"github.com/turnstile-dev/turnstile/engine"
	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/internal/testenv"
	"github.com/turnstile-dev/turnstile/status"
)

// The serves of an installation must provision on one Docker engine: a
// live engine announcing another refuses this serve (exit 1); one
// announcing the same, or none (the simulator, an earlier release), does
// not; a simulator serve is never refused.
func TestSameProvisioner(t *testing.T) {
	const mine, hint = "docker MINE", "daemon here at unix:///var/run/docker.sock"
	other := engine.Member{ID: "e-other", Name: "there/7", Provisioner: "docker THEIRS", ProvisionerHint: "daemon there at tcp://there:2376"}
	for _, tc := range []struct {
		name     string
		identity string
		members  []engine.Member
		refused  bool
	}{
		{"NoMembers", mine, nil, false},
		{"SameEngine", mine, []engine.Member{{ID: "e-1", Name: "a/1", Provisioner: mine}}, false},
		{"AnnouncesNone", mine, []engine.Member{{ID: "e-1", Name: "a/1"}}, false},
		{"AnotherEngine", mine, []engine.Member{{ID: "e-1", Name: "a/1", Provisioner: mine}, other}, true},
		{"Simulator", "", []engine.Member{other}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := sameProvisioner(tc.identity, hint, tc.members)
			if !tc.refused {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			var ce *codedError
			if !errors.As(err, &ce) || ce.code != exitError {
				t.Fatalf("error %v, want one with exit code %d", err, exitError)
			}
			for _, want := range []string{"the serve there/7 (engine e-other)", "docker THEIRS (daemon there at tcp://there:2376)",
				"this serve's is docker MINE (daemon here at unix:///var/run/docker.sock)", "Every serve of an installation must use the same Docker engine",
				"DOCKER_HOST"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not say %q", err, want)
				}
			}
		})
	}
}

// serve --provisioner docker against a NATS where a live engine announces
// another Docker engine exits 1 naming that serve and both engines, before
// it starts anything of its own: no member of its own, no PostgreSQL.
func TestServeRefusesAnotherDockerEngine(t *testing.T) {
	info := dockerInfo(t)
	const theirs, theirHint = "docker OTHER:DAEMON:ID", "daemon otherhost at tcp://otherhost:2376"
	core := testenv.StartCore(t, testenv.CoreOptions{Engine: engine.Config{Name: "otherhost/4242", Provisioner: theirs, ProvisionerHint: theirHint}})
	members := func() []engine.Member { return liveMembers(t, core) }
	testenv.Eventually(t, 20*time.Second, "the other serve's engine in the members", func() bool { return len(members()) == 1 })
	otherID := members()[0].ID

	dir := t.TempDir()
	env := map[string]string{"TURNSTILE_DATA_DIR": dir, "TURNSTILE_NATS_URL": core.NATS.URL, "TURNSTILE_PROVISIONER": "docker",
		"TURNSTILE_HTTP_ADDR": fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t)), "TURNSTILE_LOG_FORMAT": "text", "TURNSTILE_LOG_LEVEL": "warn"}
	code, _, errs := runCLI(t, env, "serve")
	if code != exitError {
		t.Fatalf("serve exited %d, want %d:\n%s", code, exitError, errs)
	}
	t.Logf("refused: %s", errs)
	for _, want := range []string{
		fmt.Sprintf("the serve otherhost/4242 (engine %s) provisions on another Docker engine: %s (%s)", otherID, theirs, theirHint),
		fmt.Sprintf("this serve's is docker %s (daemon %s at ", info.ID, info.Name),
		"Every serve of an installation must use the same Docker engine (point DOCKER_HOST at it on every serve)",
	} {
		if !strings.Contains(errs, want) {
			t.Errorf("stderr does not say %q:\n%s", want, errs)
		}
	}
	if ms := members(); len(ms) != 1 || ms[0].ID != otherID {
		t.Errorf("members after the refusal: %+v, want the other serve's alone", ms)
	}
	if _, err := os.Stat(filepath.Join(dir, "postgres")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the refused serve started a PostgreSQL in %s (stat: %v)", dir, err)
	}
}

// status names serves on different Docker engines under attention, and
// -o json carries each engine's provisioner; serves on one engine, or
// announcing none, get no such line.
func TestStatusShowsOtherProvisioners(t *testing.T) {
	since := time.Date(2026, 12, 5, 3, 0, 0, 0, time.UTC)
	report := func(b string) status.Report {
		return status.Report{
			Nodes: []status.Node{{Name: "fake-node-1", JetStream: true, Connected: true, Leads: []string{}}}, Streams: []status.Stream{},
			Partitions: []status.Partition{{ID: 0, Owner: "host-a/1"}, {ID: 1, Owner: "host-b/2"}}, P: 2,
			Engines: []status.Engine{
				{Name: "host-a/1", ID: "e-a", Since: since, Partitions: []int{0}, P: 2, Provisioner: "docker AAAA", ProvisionerHint: "daemon a at unix:///a.sock"},
				{Name: "host-b/2", ID: "e-b", Since: since, Partitions: []int{1}, P: 2, Provisioner: b},
			},
		}
	}
	for _, tc := range []struct {
		name, b   string
		attention bool
	}{{"OtherEngine", "docker BBBB", true}, {"SameEngine", "docker AAAA", false}, {"NoneAnnounced", "", false}} {
		t.Run(tc.name, func(t *testing.T) {
			rep := report(tc.b)
			fake := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				_ = json.NewEncoder(w).Encode(rep)
			})
			code, out, errs := runCLI(t, fake.env(t), "status")
			if code != 0 {
				t.Fatalf("status: exit %d\nstdout: %s\nstderr: %s", code, out, errs)
			}
			line := "attention: the serves provision on 2 different container engines (host-a/1 on docker AAAA (daemon a at unix:///a.sock); " +
				"host-b/2 on docker BBBB)"
			if got := strings.Contains(out, line) && strings.Contains(out, "restart the serves onto one Docker engine"); got != tc.attention {
				t.Errorf("attention line shown %v, want %v:\n%s", got, tc.attention, out)
			}
			if !tc.attention && strings.Contains(out, "container engines") {
				t.Errorf("a line about container engines:\n%s", out)
			}
			code, out, errs = runCLI(t, fake.env(t), "status", "-o", "json")
			var got struct {
				Engines []struct {
					Provisioner *string `json:"provisioner"`
				} `json:"engines"`
			}
			if code != 0 || json.Unmarshal([]byte(out), &got) != nil || len(got.Engines) != 2 {
				t.Fatalf("status -o json: exit %d\nstdout: %s\nstderr: %s", code, out, errs)
			}
			if p := got.Engines[0].Provisioner; p == nil || *p != "docker AAAA" {
				t.Errorf("status -o json: host-a/1's provisioner is not docker AAAA:\n%s", out)
			}
			if p := got.Engines[1].Provisioner; (tc.b == "") != (p == nil) {
				t.Errorf("status -o json: host-b/2's provisioner %v, want %q (absent when empty):\n%s", p, tc.b, out)
			}
		})
	}
}

// A serve on the same Docker engine as a live serve starts, and its own
// engine announces that engine: "docker <daemon ID>" and its name.
func TestServeOnTheSameDockerEngine(t *testing.T) {
	info := dockerInfo(t)
	mine := "docker " + info.ID
	core := testenv.StartCore(t, testenv.CoreOptions{Engine: engine.Config{Name: "otherhost/4242", Provisioner: mine,
		ProvisionerHint: "daemon " + info.Name + " at tcp://otherhost:2376"}})
	// An image that exists or not: serve builds none with --default-image.
	startInProcessServe(t, map[string]string{"TURNSTILE_NATS_URL": core.NATS.URL, "TURNSTILE_PROVISIONER": "docker",
		"TURNSTILE_DEFAULT_IMAGE": "turnstile-test-none:1"})
	var ms []engine.Member
	testenv.Eventually(t, 20*time.Second, "both engines in the members", func() bool {
		ms = liveMembers(t, core)
		return len(ms) == 2
	})
	for _, m := range ms {
		if m.Name == "otherhost/4242" {
			continue
		}
		if m.Provisioner != mine || !strings.HasPrefix(m.ProvisionerHint, "daemon "+info.Name+" at ") {
			t.Errorf("serve's member %+v: want provisioner %q and a hint naming daemon %s", m, mine, info.Name)
		}
	}
}

// dockerInfo is the test Docker engine's info; testenv.Docker says so
// loudly and skips when Docker is unreachable (and fails when CI=true).
func dockerInfo(t *testing.T) system.Info {
	t.Helper()
	cli := testenv.Docker(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	info, err := cli.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info
}

// liveMembers reads the engines' members bucket of core's NATS.
func liveMembers(t *testing.T, core *testenv.Core) []engine.Member {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ms, err := engine.ReadMembers(ctx, core.JS, events.NewNames(""), events.DefaultEngineDurable)
	if err != nil {
		t.Fatal(err)
	}
	return ms
}
