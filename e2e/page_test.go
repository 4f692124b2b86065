package e2e_test

import (
	"context"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// chromium returns the path of a headless-capable Chromium or Chrome. Absent,
// the test skips, unless CI is set: there .ci/run installs Debian's
// chromium, and its absence is a failure.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "headless-shell"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("no Chromium found and CI is set: install Debian's chromium (.ci/run does)")
	}
	t.Skip("no Chromium found: apt-get install chromium to run the page test")
	return ""
}

// browser starts a headless Chromium for the test and returns its tab's
// context; it also collects what the page writes to its console.
func browser(t *testing.T) (context.Context, func() []string) {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chromium(t)), chromedp.WindowSize(1280, 900))
	if os.Geteuid() == 0 {
		opts = append(opts, chromedp.NoSandbox) // Chromium refuses to sandbox as root (CI runs as root)
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	if err := chromedp.Do(ctx); err != nil { // start the browser now, without a deadline
		cancel()
		cancelAlloc()
		t.Fatalf("start Chromium: %v", err)
	}
	var mu sync.Mutex
	var console []string
	var wg sync.WaitGroup
	msgs := chromedp.Console(ctx)
	wg.Go(func() {
		for m, err := range msgs {
			if err != nil {
				return
			}
			mu.Lock()
			console = append(console, m.String())
			mu.Unlock()
		}
	})
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
		wg.Wait()
	})
	return ctx, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), console...)
	}
}

// TestTimelinePage (issue 14 item 3): the page served at / follows the API
// live in a real browser. Opened before anything exists, with the token in
// the fragment, it lists a workspace as it is created, and its timeline shows
// generation lanes, the restart refused while provisioning with its code,
// the provision, a stale report of the replaced generation, and the
// container's exit as a failure with its reason.
// TURNSTILE_SCREENSHOT=1 saves docs/timeline.png.
func TestTimelinePage(t *testing.T) {
	ctx, console := browser(t)
	srv := startServe(t, serveOptions{args: []string{"--provisioner", "sim", "--sim-min-latency", "0s", "--sim-max-latency", "50ms"}})
	token := srv.apiToken(t)
	if token == "" {
		t.Fatal("serve generated no API token")
	}
	if !strings.Contains(srv.stderr.String(), srv.httpURL()+"/ (the timeline") {
		t.Fatalf("the banner does not name the page:\n%s", srv.stderr)
	}
	step := func(what string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		sctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		if err := chromedp.Do(sctx, actions...); err != nil {
			html, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body.innerText`))
			t.Fatalf("%s: %v\npage:\n%s\nconsole: %q", what, err, html, console())
		}
	}
	// until waits for a JavaScript condition on the page.
	until := func(what, js string) {
		t.Helper()
		step(what, chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			_, err := chromedp.Poll[bool](js, chromedp.WithPollingTimeout(50*time.Second))(ctx, tg)
			return err
		}))
	}
	text := func(sel string) string {
		t.Helper()
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		s, err := chromedp.Run(sctx, chromedp.Text(sel))
		if err != nil {
			t.Fatalf("text of %s: %v", sel, err)
		}
		return s
	}

	// A wrong token in the fragment: taken off the address bar, refused by
	// the API, and the form asks for another.
	wrong := strings.Repeat("w", 43)
	step("open the page with a wrong token", chromedp.Navigate(srv.httpURL()+"/#token="+wrong))
	until("a refused token brings the form back",
		`!document.querySelector('#login').hidden && document.querySelector('#login-error').textContent.includes('refused')`)
	if loc, err := chromedp.Run(ctx, chromedp.Location()); err != nil || strings.Contains(loc, wrong) {
		t.Fatalf("the token stays in the address bar: %q %v", loc, err)
	}
	seen := len(console()) // the 401s just now are expected
	step("give the token in the form", chromedp.SendKeys(`#token-input`, token), chromedp.Click(`#token-form button`))
	until("the list follows the stream", `document.querySelector('#conn').dataset.state === 'live'`)

	// Generation 1's agent is ready 2s after it starts: the window for the
	// refused restart.
	status, body := srv.httpDo(t, "POST", "/v1/workspaces", `{"id":"tl","spec":{"env":{"AGENT_START_DELAY":"2s"}}}`, "")
	if status != http.StatusAccepted {
		t.Fatalf("create: %d %s", status, body)
	}
	if status, body := srv.httpDo(t, "POST", "/v1/workspaces/tl/restart", "", ""); status != http.StatusConflict || !strings.Contains(string(body), `"busy"`) {
		t.Fatalf("restart while provisioning: %d %s", status, body)
	}
	until("the new workspace appears in the list", `!!document.querySelector('tr[data-ws="tl"]')`)
	if gen := text(`tr[data-ws="tl"] td.gen`); gen != "1" {
		t.Errorf("generation in the list: %q", gen)
	}
	if age := text(`tr[data-ws="tl"] td.age`); !regexp.MustCompile(`^\d+s$`).MatchString(age) {
		t.Errorf("age in the list: %q", age)
	}

	step("open the timeline", chromedp.Click(`tr[data-ws="tl"] a`))
	until("the refused restart is on the timeline",
		`!!document.querySelector('.entry[data-kind="refused"][data-type="restart"][data-code="busy"][data-gen="1"]')`)
	until("the provision is on the timeline", `!!document.querySelector('.entry[data-kind="event"][data-type="workspace.provisioned"][data-gen="1"]')`)
	until("the list says running", `document.querySelector('tr[data-ws="tl"] td.state').textContent === 'running'`)
	refused := text(`.entry[data-kind="refused"]`)
	for _, want := range []string{"restart refused", "busy", "user: restart by api:", "provisioning"} {
		if !strings.Contains(refused, want) {
			t.Errorf("the refused restart reads %q, want %q in it", refused, want)
		}
	}

	// A new spec on a running workspace provisions generation 2, whose
	// agent exits with code 3 two seconds after it is ready; replacing
	// generation 1's container makes the watcher report its exit, which is
	// stale by then.
	if status, body := srv.httpDo(t, "PUT", "/v1/workspaces/tl/spec", `{"env":{"AGENT_EXIT_AFTER":"2s","AGENT_EXIT_CODE":"3"}}`, ""); status != http.StatusAccepted {
		t.Fatalf("configure: %d %s", status, body)
	}
	until("generation 2 gets a lane", `!!document.querySelector('.lane-head[data-gen="2"]') && !!document.querySelector('.entry[data-gen="2"]')`)
	until("the stale report is marked in lane 1",
		`!!document.querySelector('.entry[data-kind="stale"][data-type="container_exited"][data-gen="1"]')`)
	until("the exit is a failure in lane 2",
		`!!document.querySelector('.entry[data-kind="failure"][data-type="workspace.container_exited"][data-gen="2"]')`)
	until("the list says failed at generation 2",
		`document.querySelector('tr[data-ws="tl"] td.state').textContent === 'failed' && document.querySelector('tr[data-ws="tl"] td.gen').textContent === '2'`)
	failure := text(`.entry[data-kind="failure"]`)
	for _, want := range []string{"container_exited", "running → failed", "code 3", "system: container_exited by watcher"} {
		if !strings.Contains(failure, want) {
			t.Errorf("the failure reads %q, want %q in it", failure, want)
		}
	}
	if stale := text(`.entry[data-kind="stale"]`); !strings.Contains(stale, "stale") || !strings.Contains(stale, "by watcher") {
		t.Errorf("the stale report reads %q", stale)
	}

	if os.Getenv("TURNSTILE_SCREENSHOT") != "" {
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join("..", "docs", "timeline.png"), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, m := range console()[seen:] {
		if strings.HasPrefix(m, "error") || strings.HasPrefix(m, "exception") || strings.Contains(m, "Content Security Policy") {
			t.Errorf("the page's console: %s", m)
		}
	}
	if errors.Is(ctx.Err(), context.Canceled) {
		t.Fatal("the browser went away")
	}
}
