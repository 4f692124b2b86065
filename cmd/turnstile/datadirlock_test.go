package main

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/turnstile-dev/turnstile/internal/testenv"
)

// A second serve on a running serve's data dir, on ports of its own, is
// refused before it writes anything there (exit 1, naming the holder),
// and the first goes on as it was.
func TestSecondServeOnOneDataDirIsRefused(t *testing.T) {
	first := startInProcessServe(t, nil)
	apiURL := filepath.Join(first.dir, "api-url")
	before, err := os.ReadFile(apiURL)
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"TURNSTILE_DATA_DIR": first.dir, "TURNSTILE_PROVISIONER": "sim",
		"TURNSTILE_NATS_LISTEN": fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t)),
		"TURNSTILE_HTTP_ADDR":   fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t)),
		"TURNSTILE_LOG_FORMAT":  "text", "TURNSTILE_LOG_LEVEL": "warn"}
	code, _, errs := runCLI(t, env, "serve")
	if code != exitError {
		t.Fatalf("second serve exited %d, want %d:\n%s", code, exitError, errs)
	}
	want := fmt.Sprintf("another serve runs on the data dir %s (serve %s holds ", first.dir, engineName())
	if !strings.Contains(errs, want) {
		t.Errorf("stderr does not say %q:\n%s", want, errs)
	}
	if after, err := os.ReadFile(apiURL); err != nil || string(after) != string(before) {
		t.Errorf("api-url after the refusal: %q (%v), want the first serve's %q", after, err, before)
	}
	if _, err := os.Stat(filepath.Join(first.dir, "postgres")); err == nil {
		t.Errorf("the refused serve started a PostgreSQL in %s", first.dir)
	}
	resp, err := http.Get(first.httpURL + "/readyz")
	if err != nil {
		t.Fatalf("the first serve after the refusal: %v", err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("the first serve's /readyz after the refusal: %d, want 200", resp.StatusCode)
	}
}

// The lock is the holder's until it lets go; then the next takes it.
func TestDataDirLockIsHeldUntilReleased(t *testing.T) {
	dir := t.TempDir()
	unlock, err := lockDataDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lockDataDir(dir); err == nil || !strings.Contains(err.Error(), "another serve runs on the data dir") {
		t.Fatalf("second lock: %v, want a refusal", err)
	}
	if err := unlock(); err != nil {
		t.Fatal(err)
	}
	unlock, err = lockDataDir(dir)
	if err != nil {
		t.Fatalf("lock after the release: %v", err)
	}
	if err := unlock(); err != nil {
		t.Fatal(err)
	}
}
