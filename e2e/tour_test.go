package e2e_test

import (
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// tourStep is one line of the README's tour.
type tourStep struct {
	line     string // the command as written, comment removed
	wantExit int    // "exit code N" in its comment, else 0
}

var exitComment = regexp.MustCompile(`exit code (\d+)`)

// readTour parses the shell block between the tour markers of README.md.
func readTour(t *testing.T) []tourStep {
	t.Helper()
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	start := strings.Index(text, "<!-- tour:start")
	end := strings.Index(text, "<!-- tour:end -->")
	if start < 0 || end < start {
		t.Fatal("README.md has no tour between <!-- tour:start --> and <!-- tour:end -->")
	}
	block := text[start:end]
	open := strings.Index(block, "```sh\n")
	close := strings.LastIndex(block, "```")
	if open < 0 || close <= open {
		t.Fatal("the README tour has no ```sh block")
	}
	var steps []tourStep
	for _, raw := range strings.Split(block[open+len("```sh\n"):close], "\n") {
		line, comment := raw, ""
		if i := strings.Index(raw, "  #"); i >= 0 {
			line, comment = raw[:i], raw[i:]
		}
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		st := tourStep{line: line}
		if m := exitComment.FindStringSubmatch(comment); m != nil {
			st.wantExit, _ = strconv.Atoi(m[1])
		}
		steps = append(steps, st)
	}
	return steps
}

// TestTour runs the README's five-minute tour verbatim: serve from its
// first line, every other line through sh in the same directory with
// turnstile on PATH, each with the exit code its comment names.
func TestTour(t *testing.T) {
	steps := readTour(t)
	if len(steps) < 5 || !strings.HasPrefix(steps[0].line, "turnstile serve") {
		t.Fatalf("the tour must start with turnstile serve and go on: %+v", steps)
	}
	args := strings.Fields(strings.TrimPrefix(steps[0].line, "turnstile "))
	srv := startServe(t, serveOptions{args: args[1:]})
	// As a user runs it: in serve's directory, with nothing but what serve
	// wrote into .turnstile/ (api-url and its token, nats-url, database-url).
	env := []string{"PATH=" + binDir + ":" + os.Getenv("PATH")}
	for _, st := range steps[1:] {
		if strings.HasPrefix(st.line, "psql ") && !hasPsql() {
			t.Logf("skipping %q: psql is not installed", st.line)
			continue
		}
		if strings.Contains(st.line, " --follow") || strings.Contains(st.line, " --watch") {
			r := runFollowStep(t, srv.dir, env, st.line)
			t.Logf("$ %s  (then Ctrl-C)\n%s%s", st.line, r.stdout, r.stderr)
			want(t, r, st.wantExit, st.line+", then Ctrl-C")
			checkTourOutput(t, st.line, r)
			continue
		}
		r := runIn(t, srv.dir, env, "sh", "-c", st.line)
		t.Logf("$ %s\n%s%s", st.line, r.stdout, r.stderr)
		want(t, r, st.wantExit, st.line)
		checkTourOutput(t, st.line, r)
	}
}

// checkTourOutput checks what the README says each step shows.
func checkTourOutput(t *testing.T, line string, r result) {
	t.Helper()
	expect := func(where, s, sub string) {
		t.Helper()
		if !strings.Contains(s, sub) {
			t.Fatalf("%q: %s lacks %q:\n%s", line, where, sub, r)
		}
	}
	switch {
	case strings.HasPrefix(line, "turnstile create demo"):
		expect("stdout", r.stdout, "accepted; provisioning at generation 1")
	case line == "turnstile restart demo":
		expect("stderr", r.stderr, "restart demo refused (busy)")
		expect("stderr", r.stderr, "allowed now: stop, delete, configure")
	case strings.HasPrefix(line, "turnstile wait demo"):
		expect("stdout", r.stdout, "demo is running at generation 1")
	case line == "turnstile restart demo --wait":
		expect("stdout", r.stdout, "demo is running at generation 2")
	case line == "turnstile history demo", line == "turnstile history demo --follow":
		for _, s := range []string{"workspace.created", "none → provisioning", "workspace.provisioned", "workspace.restart_requested"} {
			expect("stdout", r.stdout, s)
		}
	case line == "turnstile audit demo", line == "turnstile audit --all":
		expect("stdout", r.stdout, "OK")
	case line == "turnstile get demo":
		expect("stdout", r.stdout, "running")
		expect("stdout", r.stdout, "REFLECTS")
	case strings.HasPrefix(line, "psql "):
		expect("stdout", r.stdout, "demo")
	case strings.HasPrefix(line, "turnstile delete demo"):
		expect("stdout", r.stdout, "demo is deleted")
	}
}

// runFollowStep runs a line that follows until Ctrl-C, as a reader of the
// README would: once it has shown the timeline so far (within a minute),
// it gets SIGINT, and must end within ten seconds.
func runFollowStep(t *testing.T, dir string, env []string, line string) result {
	t.Helper()
	cmd := exec.Command("sh", "-c", "exec "+line) // exec: the signal reaches turnstile
	cmd.Dir = dir
	cmd.Env = append(baseEnv(), env...)
	out, errb := &syncBuffer{}, &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	ended := false
	defer func() {
		if !ended {
			_ = cmd.Process.Kill()
			t.Logf("%s killed: %v", line, <-done)
		}
	}()
	waitFor(t, time.Minute, line+" shows the timeline so far", func() bool {
		return strings.Contains(out.String(), "workspace.provisioned")
	})
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		ended = true
		return result{code: exitCode(err), stdout: out.String(), stderr: errb.String()}
	case <-time.After(10 * time.Second):
		t.Fatalf("%s did not end within 10s of Ctrl-C:\n%s\n%s", line, out, errb)
		return result{}
	}
}

func hasPsql() bool {
	for _, dir := range strings.Split(os.Getenv("PATH"), ":") {
		if fi, err := os.Stat(dir + "/psql"); err == nil && !fi.IsDir() {
			return true
		}
	}
	return false
}
