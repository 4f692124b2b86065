package e2e_test

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/turnstile-dev/turnstile/internal/testenv"
	"github.com/turnstile-dev/turnstile/provisioner"
)

// secretSet runs 'turnstile secret set name' in s's directory with value
// on stdin, as an operator would pipe it.
func (s *server) secretSet(t *testing.T, name, value string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "turnstile"), "secret", "set", name)
	cmd.Dir = s.dir
	cmd.Env = append(baseEnv(), s.clientEnv()...)
	cmd.Stdin = strings.NewReader(value + "\n")
	out, err := cmd.CombinedOutput()
	if err != nil || bytes.Contains(out, []byte(value)) {
		t.Fatalf("secret set %s: %v\n%s", name, err, out)
	}
}

// TestSecretsStayOutOfTheLog: a workspace created and configured with env
// values secret://NAME gets the values in its container while the command
// and event streams (every message's bytes and headers), the read model
// (every row of every table), the JetStream and PostgreSQL files, the HTTP
// API's responses, the CLI's output and serve's log hold only the
// reference. A missing secret fails the attempt, naming it. Issue 12 item 6.
func TestSecretsStayOutOfTheLog(t *testing.T) {
	srv := startServe(t, serveOptions{args: []string{"--provisioner", "sim", "--sim-min-latency", "0s", "--sim-max-latency", "50ms"}})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	value := "e2e-value-" + randomSuffix(t) + "-never-logged"
	srv.secretSet(t, "db", value)
	// The sim's agent reads AGENT_START_DELAY as the real agent does: the
	// unresolved "secret://delay" is no duration and the attempt would
	// fail, so "running" proves the provisioner got the value.
	srv.secretSet(t, "delay", "0s")

	var outputs []string // everything shown to a user
	run := func(code int, args ...string) result {
		t.Helper()
		r := srv.turnstile(t, args...)
		want(t, r, code, strings.Join(args, " "))
		outputs = append(outputs, r.stdout, r.stderr)
		return r
	}
	run(0, "create", "sec", "--env", "DB_PASSWORD=secret://db", "--secret-env", "AGENT_START_DELAY=delay", "--wait")
	run(0, "configure", "sec", "--secret-env", "OTHER_TOKEN=db", "--wait")
	r := run(1, "create", "miss", "--env", "API_TOKEN=secret://absent", "--wait")
	if !strings.Contains(r.stderr, `secret "absent" (env API_TOKEN) is not set`) || !strings.Contains(r.stderr, "turnstile secret set absent") {
		t.Fatalf("the failure does not name the missing secret:\n%s", r)
	}
	waitFor(t, time.Minute, "the read model to show sec configured and miss failed", func() bool {
		a, b := srv.turnstile(t, "get", "sec", "-o", "json"), srv.turnstile(t, "get", "miss", "-o", "json")
		return strings.Contains(a.stdout, "OTHER_TOKEN") && strings.Contains(a.stdout, `"running"`) && strings.Contains(b.stdout, `"failed"`)
	})
	get := run(0, "get", "sec", "-o", "json")
	hist := run(0, "history", "sec", "-o", "json")
	for _, r := range []result{get, hist} {
		if !strings.Contains(r.stdout, "secret://db") {
			t.Fatalf("the reference is not shown:\n%s", r)
		}
	}
	run(0, "history", "miss", "-o", "json")
	run(0, "list", "-o", "json")
	run(0, "secret", "list")
	run(0, "audit", "--all")
	for _, path := range []string{"/v1/workspaces/sec", "/v1/workspaces/sec/events", "/v1/workspaces/miss/events", "/v1/workspaces"} {
		status, body := srv.httpDo(t, "GET", path, "", "")
		if status != 200 {
			t.Fatalf("GET %s: %d %s", path, status, body)
		}
		outputs = append(outputs, string(body))
	}

	check := func(where string, b []byte) {
		t.Helper()
		if bytes.Contains(b, []byte(value)) {
			t.Errorf("%s holds the secret's value", where)
		}
	}
	for i, o := range outputs {
		check("output "+strconv.Itoa(i), []byte(o))
	}
	check("serve's log", []byte(srv.stderr.String()))

	// Every message of every stream, headers included.
	_, js := srv.goClient(t)
	refs := 0
	// The three streams serve keeps (the user role may not list streams).
	for _, name := range []string{"TURNSTILE_COMMANDS", "TURNSTILE_SYSTEM", "TURNSTILE_EVENTS"} {
		st, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		info, err := st.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for seq := info.State.FirstSeq; seq <= info.State.LastSeq && seq > 0; seq++ {
			m, err := st.GetMsg(ctx, seq)
			if errors.Is(err, jetstream.ErrMsgNotFound) {
				continue
			}
			if err != nil {
				t.Fatal(err)
			}
			check(name+" message "+m.Subject, m.Data)
			for k, vs := range m.Header {
				check(name+" header "+k, []byte(strings.Join(vs, "\n")))
			}
			refs += bytes.Count(m.Data, []byte("secret://db"))
		}
	}
	if refs == 0 {
		t.Fatal("no message holds the reference: the test reads the wrong streams")
	}

	// Every row of every table of the read model.
	url, err := os.ReadFile(filepath.Join(srv.dir, ".turnstile", "database-url"))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, strings.TrimSpace(string(url)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	tables, err := conn.Query(ctx, `SELECT quote_ident(table_schema) || '.' || quote_ident(table_name) FROM information_schema.tables
		WHERE table_schema NOT IN ('pg_catalog', 'information_schema') AND table_type = 'BASE TABLE'`)
	if err != nil {
		t.Fatal(err)
	}
	tableNames, err := pgx.CollectRows(tables, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	rowRefs := 0
	for _, tbl := range tableNames {
		rows, err := conn.Query(ctx, "SELECT t::text FROM "+tbl+" t")
		if err != nil {
			t.Fatal(err)
		}
		texts, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		for _, row := range texts {
			check("table "+tbl, []byte(row))
			rowRefs += strings.Count(row, "secret://db")
		}
	}
	if rowRefs == 0 || !slices.ContainsFunc(tableNames, func(s string) bool { return strings.HasSuffix(s, "workspace_events") }) {
		t.Fatalf("the read model (%v) holds no reference: the test reads the wrong tables", tableNames)
	}

	// The files: JetStream's store, PostgreSQL's, everything in the data
	// dir but the secrets store itself.
	dataDir := filepath.Join(srv.dir, ".turnstile")
	err = filepath.WalkDir(dataDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil // a file PostgreSQL removed meanwhile, or one we may not read
		}
		if d.IsDir() && path == filepath.Join(dataDir, "secrets") {
			return filepath.SkipDir
		}
		if d.Type().IsRegular() {
			if b, err := os.ReadFile(path); err == nil {
				check(path, b)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dataDir, "secrets", "db"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("secret file: %v %v", fi.Mode(), err)
	}
}

// TestSecretsDocker: on a real Docker engine the container's environment
// has the secret's value; a secret set again is used from the next
// attempt (restart) on while the running container keeps the old value;
// removing the secret leaves the running container alone. Issue 12 item 6.
func TestSecretsDocker(t *testing.T) {
	cli := testenv.Docker(t)
	suffix := randomSuffix(t)
	srv := startServe(t, serveOptions{args: []string{"--provisioner", "docker", "--installation", "e2e-" + suffix}})
	id := "sec-" + suffix
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	t.Cleanup(func() {
		_ = cli.ContainerRemove(context.Background(), provisioner.ContainerName(id), containerRemoveForce())
	})
	envOf := func() (string, bool) {
		t.Helper()
		c, err := cli.ContainerInspect(ctx, provisioner.ContainerName(id))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range c.Config.Env {
			if v, ok := strings.CutPrefix(e, "DB_PASSWORD="); ok {
				return v, c.State.Running
			}
		}
		t.Fatalf("the container's env %v has no DB_PASSWORD", c.Config.Env)
		return "", false
	}
	first, second := "first-"+suffix, "second-"+suffix
	srv.secretSet(t, "db", first)
	want(t, srv.turnstile(t, "create", id, "--env", "DB_PASSWORD=secret://db", "--wait", "--timeout", "4m"), 0, "create")
	if v, running := envOf(); v != first || !running {
		t.Fatalf("DB_PASSWORD=%q running=%v, want %q", v, running, first)
	}
	srv.secretSet(t, "db", second)
	if v, _ := envOf(); v != first {
		t.Fatalf("the running container's value changed to %q before a restart", v)
	}
	want(t, srv.turnstile(t, "restart", id, "--wait", "--timeout", "4m"), 0, "restart")
	if v, running := envOf(); v != second || !running {
		t.Fatalf("after the restart DB_PASSWORD=%q running=%v, want %q", v, running, second)
	}
	want(t, srv.turnstile(t, "secret", "rm", "db"), 0, "secret rm")
	if _, running := envOf(); !running {
		t.Fatal("removing the secret stopped the container")
	}
	r := srv.turnstile(t, "get", id, "-o", "json")
	if strings.Contains(r.stdout, first) || strings.Contains(r.stdout, second) || !strings.Contains(r.stdout, "secret://db") {
		t.Fatalf("get shows more or less than the reference:\n%s", r)
	}
	want(t, srv.turnstile(t, "delete", id, "--wait", "--timeout", "2m"), 0, "delete")
}
