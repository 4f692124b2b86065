package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
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
// live engine announcing another refuses this serve (exit 1), as does a
// simulator beside Docker either way; one announcing the same, or none (an
// earlier release), does not, nor does another simulator (simulators
// start beside one another: the load tests run several).
func TestSameProvisioner(t *testing.T) {
	const mine, hint = "docker MINE", "daemon here at unix:///var/run/docker.sock"
	const mySim, mySimHint = "sim /srv/here/.turnstile/sim/host.json@here", "simulated by serve here/1, no containers run"
	other := engine.Member{ID: "e-other", Name: "there/7", Provisioner: "docker THEIRS", ProvisionerHint: "daemon there at tcp://there:2376"}
	otherSim := engine.Member{ID: "e-sim", Name: "there/8", Provisioner: "sim /srv/there/.turnstile/sim/host.json@there",
		ProvisionerHint: "simulated by serve there/8, no containers run"}
	for _, tc := range []struct {
		name           string
		identity, hint string
		members        []engine.Member
		want           []string // in the refusal; nil: admitted
	}{
		{"NoMembers", mine, hint, nil, nil},
		{"SameEngine", mine, hint, []engine.Member{{ID: "e-1", Name: "a/1", Provisioner: mine}}, nil},
		{"AnnouncesNone", mine, hint, []engine.Member{{ID: "e-1", Name: "a/1"}}, nil},
		{"AnotherEngine", mine, hint, []engine.Member{{ID: "e-1", Name: "a/1", Provisioner: mine}, other}, []string{
			"the serve there/7 (engine e-other) provisions on another container engine: docker THEIRS (daemon there at tcp://there:2376)",
			"this serve's is docker MINE (daemon here at unix:///var/run/docker.sock)",
			"Every serve of an installation must use the same Docker engine (point DOCKER_HOST at it on every serve): "}},
		{"SimulatorBesideDocker", mySim, mySimHint, []engine.Member{otherSim, other}, []string{
			"the serve there/7 (engine e-other) provisions on another container engine: docker THEIRS (daemon there at tcp://there:2376)",
			"this serve's is " + mySim + " (" + mySimHint + ")",
			"Every serve of an installation must use the same Docker engine (point DOCKER_HOST at it on every serve), " +
				"and a simulator (--provisioner sim, or auto when Docker does not answer) shares an installation with no Docker engine: "}},
		{"DockerBesideSimulator", mine, hint, []engine.Member{otherSim}, []string{
			"the serve there/8 (engine e-sim) provisions on another container engine: " + otherSim.Provisioner + " (" + otherSim.ProvisionerHint + ")",
			"this serve's is docker MINE (daemon here at unix:///var/run/docker.sock)",
			"and a simulator (--provisioner sim, or auto when Docker does not answer) shares an installation with no Docker engine"}},
		{"AnotherSimulator", mySim, mySimHint, []engine.Member{otherSim, {ID: "e-1", Name: "a/1"}}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := sameProvisioner(tc.identity, tc.hint, tc.members)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			var ce *codedError
			if !errors.As(err, &ce) || ce.code != exitError {
				t.Fatalf("error %v, want one with exit code %d", err, exitError)
			}
			for _, want := range tc.want {
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
	errs := refusedServe(t, "docker", theirs, theirHint)
	for _, want := range []string{
		fmt.Sprintf("provisions on another container engine: %s (%s)", theirs, theirHint),
		fmt.Sprintf("this serve's is docker %s (daemon %s at ", info.ID, info.Name),
		"Every serve of an installation must use the same Docker engine (point DOCKER_HOST at it on every serve): ",
	} {
		if !strings.Contains(errs, want) {
			t.Errorf("stderr does not say %q:\n%s", want, errs)
		}
	}
}

// serve --provisioner sim beside a live engine on Docker exits 1 naming
// both, before its simulator opens (no state file) or anything else of it
// starts; so does serve --provisioner docker beside a simulated serve.
func TestServeRefusesSimulatorBesideDocker(t *testing.T) {
	const mix = "and a simulator (--provisioner sim, or auto when Docker does not answer) shares an installation with no Docker engine"
	t.Run("SimulatorJoinsDocker", func(t *testing.T) {
		const theirs, theirHint = "docker OTHER:DAEMON:ID", "daemon otherhost at tcp://otherhost:2376"
		dir := t.TempDir()
		errs := refusedServeIn(t, dir, "sim", theirs, theirHint)
		stateFile := filepath.Join(dir, "sim", "host.json")
		for _, want := range []string{
			fmt.Sprintf("provisions on another container engine: %s (%s)", theirs, theirHint),
			fmt.Sprintf("this serve's is sim %s@%s (simulated by serve %s/", stateFile, hostName(), hostName()),
			mix, "(this serve's simulator: chosen with --provisioner sim)",
		} {
			if !strings.Contains(errs, want) {
				t.Errorf("stderr does not say %q:\n%s", want, errs)
			}
		}
		if _, err := os.Stat(filepath.Join(dir, "sim")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("the refused serve opened its simulator in %s (stat: %v)", dir, err)
		}
	})
	t.Run("DockerJoinsSimulator", func(t *testing.T) {
		info := dockerInfo(t)
		const theirs, theirHint = "sim /srv/otherhost/.turnstile/sim/host.json@otherhost", "simulated by serve otherhost/4242, no containers run"
		errs := refusedServe(t, "docker", theirs, theirHint)
		for _, want := range []string{
			fmt.Sprintf("provisions on another container engine: %s (%s)", theirs, theirHint),
			fmt.Sprintf("this serve's is docker %s (daemon %s at ", info.ID, info.Name),
			mix,
		} {
			if !strings.Contains(errs, want) {
				t.Errorf("stderr does not say %q:\n%s", want, errs)
			}
		}
	})
}

// A simulated serve starts beside another simulated serve (each its own
// simulator; the load tests run several on one NATS), and its engine
// announces its simulator: the absolute path of its state file and the
// host, described as simulated by this serve.
func TestServeSimulatorBesideAnother(t *testing.T) {
	const theirs = "sim /srv/otherhost/.turnstile/sim/host.json@otherhost"
	core := testenv.StartCore(t, testenv.CoreOptions{Engine: engine.Config{Name: "otherhost/4242", Provisioner: theirs,
		ProvisionerHint: "simulated by serve otherhost/4242, no containers run"}})
	testenv.Eventually(t, 20*time.Second, "the other serve's engine in the members", func() bool { return len(liveMembers(t, core)) == 1 })
	s := startInProcessServe(t, map[string]string{"TURNSTILE_NATS_URL": core.NATS.URL})
	var ms []engine.Member
	testenv.Eventually(t, 20*time.Second, "both engines in the members", func() bool {
		ms = liveMembers(t, core)
		return len(ms) == 2
	})
	dir, err := filepath.Abs(s.dir)
	if err != nil {
		t.Fatal(err)
	}
	mine := "sim " + filepath.Join(dir, "sim", "host.json") + "@" + hostName()
	for _, m := range ms {
		if m.Name == "otherhost/4242" {
			continue
		}
		if m.Provisioner != mine || !strings.HasPrefix(m.ProvisionerHint, "simulated by serve "+hostName()+"/") {
			t.Errorf("serve's member %+v: want provisioner %q and a hint naming this serve", m, mine)
		}
	}
}

// refusedServe runs serve --provisioner provisioner on a fresh data dir
// against a NATS where a live engine announces the container engine
// theirs (theirHint), wants it refused (exit 1) before it starts
// anything of its own, and returns its stderr.
func refusedServe(t *testing.T, provisioner, theirs, theirHint string) string {
	t.Helper()
	return refusedServeIn(t, t.TempDir(), provisioner, theirs, theirHint)
}

func refusedServeIn(t *testing.T, dir, provisioner, theirs, theirHint string) string {
	t.Helper()
	core := testenv.StartCore(t, testenv.CoreOptions{Engine: engine.Config{Name: "otherhost/4242", Provisioner: theirs, ProvisionerHint: theirHint}})
	members := func() []engine.Member { return liveMembers(t, core) }
	testenv.Eventually(t, 20*time.Second, "the other serve's engine in the members", func() bool { return len(members()) == 1 })
	otherID := members()[0].ID

	env := map[string]string{"TURNSTILE_DATA_DIR": dir, "TURNSTILE_NATS_URL": core.NATS.URL, "TURNSTILE_PROVISIONER": provisioner,
		"TURNSTILE_HTTP_ADDR": fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t)), "TURNSTILE_LOG_FORMAT": "text", "TURNSTILE_LOG_LEVEL": "warn"}
	code, _, errs := runCLI(t, env, "serve")
	if code != exitError {
		t.Fatalf("serve exited %d, want %d:\n%s", code, exitError, errs)
	}
	t.Logf("refused: %s", errs)
	if want := fmt.Sprintf("the serve otherhost/4242 (engine %s) provisions on another container engine: ", otherID); !strings.Contains(errs, want) {
		t.Errorf("stderr does not say %q:\n%s", want, errs)
	}
	if ms := members(); len(ms) != 1 || ms[0].ID != otherID {
		t.Errorf("members after the refusal: %+v, want the other serve's alone", ms)
	}
	if _, err := os.Stat(filepath.Join(dir, "postgres")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the refused serve started a PostgreSQL in %s (stat: %v)", dir, err)
	}
	return errs
}

// status shows each engine's container engine in a PROVISIONER column
// (docker and the daemon ID's first 12 characters, sim, - when none is
// announced) and names serves on different ones under attention: Docker
// engines, or a simulator beside Docker, with the advice to use one
// Docker engine; several simulators with their own line. Serves on one
// engine, or announcing none, get no such line. -o json carries each
// engine's provisioner.
func TestStatusShowsOtherProvisioners(t *testing.T) {
	since := time.Date(2026, 12, 5, 3, 0, 0, 0, time.UTC)
	const dockerA, dockerB = "docker AAAA:BBBB:CCCC:DDDD", "docker EEEE:FFFF:GGGG:HHHH"
	const simA, simB = "sim /srv/a/.turnstile/sim/host.json@host-a", "sim /srv/b/.turnstile/sim/host.json@host-b"
	report := func(a, b string) status.Report {
		return status.Report{
			Nodes: []status.Node{{Name: "fake-node-1", JetStream: true, Connected: true, Leads: []string{}}}, Streams: []status.Stream{},
			Partitions: []status.Partition{{ID: 0, Owner: "host-a/1"}, {ID: 1, Owner: "host-b/2"}}, P: 2,
			Engines: []status.Engine{
				{Name: "host-a/1", ID: "e-a", Since: since, Partitions: []int{0}, P: 2, Provisioner: a, ProvisionerHint: "hint a"},
				{Name: "host-b/2", ID: "e-b", Since: since, Partitions: []int{1}, P: 2, Provisioner: b},
			},
		}
	}
	const engines = "(host-a/1 on %s (hint a); host-b/2 on %s)"
	const dockerLine = "attention: the serves provision on 2 different container engines " + engines
	const simLine = "attention: the serves simulate their containers on 2 different simulators " + engines
	for _, tc := range []struct {
		name, a, b        string
		columnA, columnB  string
		attention, advice string
	}{
		{"OtherEngine", dockerA, dockerB, "docker AAAA:BBBB:CC", "docker EEEE:FFFF:GG", dockerLine, "restart the serves onto one Docker engine"},
		{"SimulatorBesideDocker", dockerA, simB, "docker AAAA:BBBB:CC", "sim", dockerLine, "restart the serves onto one Docker engine"},
		{"TwoSimulators", simA, simB, "sim", "sim", simLine, "run one serve, or all on one Docker engine"},
		{"SameEngine", dockerA, dockerA, "docker AAAA:BBBB:CC", "docker AAAA:BBBB:CC", "", ""},
		{"SameSimulator", simA, simA, "sim", "sim", "", ""},
		{"NoneAnnounced", dockerA, "", "docker AAAA:BBBB:CC", "-", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// ENGINE ID SINCE P PROVISIONER PARTITIONS.
			fake, out, rows := statusOf(t, report(tc.a, tc.b))
			for name, want := range map[string]string{"ENGINE": "PROVISIONER", "host-a/1": tc.columnA, "host-b/2": tc.columnB} {
				if f := rows[name]; len(f) < 6 || strings.Join(f[4:len(f)-1], " ") != want {
					t.Errorf("row %q, want PROVISIONER %q\n%s", strings.Join(f, " "), want, out)
				}
			}
			if tc.attention == "" {
				if strings.Contains(out, "container engines") || strings.Contains(out, "simulators") {
					t.Errorf("a line about container engines:\n%s", out)
				}
			} else if line := fmt.Sprintf(tc.attention, tc.a, tc.b); !strings.Contains(out, line) || !strings.Contains(out, tc.advice) {
				t.Errorf("no attention line %q ... %q:\n%s", line, tc.advice, out)
			}
			code, out, errs := runCLI(t, fake.env(t), "status", "-o", "json")
			var got struct {
				Engines []struct {
					Provisioner *string `json:"provisioner"`
				} `json:"engines"`
			}
			if code != 0 || json.Unmarshal([]byte(out), &got) != nil || len(got.Engines) != 2 {
				t.Fatalf("status -o json: exit %d\nstdout: %s\nstderr: %s", code, out, errs)
			}
			if p := got.Engines[0].Provisioner; p == nil || *p != tc.a {
				t.Errorf("status -o json: host-a/1's provisioner is not %s:\n%s", tc.a, out)
			}
			if p := got.Engines[1].Provisioner; (tc.b == "") != (p == nil) || (p != nil && *p != tc.b) {
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
