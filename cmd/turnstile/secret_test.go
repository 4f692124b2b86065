package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// runCLIIn is runCLI with stdin.
func runCLIIn(t *testing.T, stdin string, env map[string]string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	code := run(ctx, args, streams{in: strings.NewReader(stdin), out: &out, err: &errb}, func(k string) string { return env[k] })
	return code, out.String(), errb.String()
}

// TestSecretCommands: 'secret set' stores a value read from stdin or a
// file in a 0600 file of <data-dir>/secrets and never prints it; 'secret
// list' shows names, sizes and digests only; bad names and empty values
// are usage errors that store nothing; 'secret rm' removes. Issue 12 item 6.
func TestSecretCommands(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "data")
	env := map[string]string{"TURNSTILE_DATA_DIR": dataDir}
	const value = "hunter2-4b1d-value"

	code, out, errs := runCLIIn(t, value+"\n", env, "secret", "set", "db")
	if code != 0 || strings.Contains(out+errs, value) || !strings.Contains(out, "secret db set (18 bytes") {
		t.Fatalf("secret set: exit %d\n%s%s", code, out, errs)
	}
	file := filepath.Join(dataDir, "secrets", "db")
	b, err := os.ReadFile(file)
	if err != nil || string(b) != value {
		t.Fatalf("stored %q (%v): want the value without the trailing newline", b, err)
	}
	for path, mode := range map[string]os.FileMode{file: 0o600, filepath.Dir(file): 0o700} {
		if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != mode {
			t.Fatalf("%s: mode %v (%v), want %o", path, fi.Mode().Perm(), err, mode)
		}
	}

	src := filepath.Join(t.TempDir(), "key.pem")
	if err := os.WriteFile(src, []byte("line1\nline2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, out, errs := runCLIIn(t, "", env, "secret", "set", "tls.key", "--from-file", src); code != 0 {
		t.Fatalf("secret set --from-file: exit %d\n%s%s", code, out, errs)
	}
	if b, _ := os.ReadFile(filepath.Join(dataDir, "secrets", "tls.key")); string(b) != "line1\nline2\n" {
		t.Fatalf("--from-file stored %q: want the file byte for byte", b)
	}

	for _, format := range []string{"table", "json"} {
		code, out, errs := runCLIIn(t, "", env, "secret", "list", "-o", format)
		if code != 0 || strings.Contains(out, value) || strings.Contains(out, "line1") ||
			!strings.Contains(out, "db") || !strings.Contains(out, "tls.key") {
			t.Fatalf("secret list -o %s: exit %d\n%s%s", format, code, out, errs)
		}
		if format == "json" {
			var list []map[string]any
			if err := json.Unmarshal([]byte(out), &list); err != nil || len(list) != 2 || list[0]["size"] != float64(len(value)) {
				t.Fatalf("secret list -o json: %v\n%s", err, out)
			}
		}
	}

	for _, tc := range []struct {
		name  string
		stdin string
		args  []string
		says  string
	}{
		{"PathName", "v", []string{"secret", "set", "../escape"}, "secret name"},
		{"HiddenName", "v", []string{"secret", "set", ".x"}, "secret name"},
		{"EmptyValue", "\n", []string{"secret", "set", "empty"}, "empty"},
		{"NoValueArgument", "v", []string{"secret", "set", "db", "hunter2"}, "want 1 argument"},
		{"RmBadName", "", []string{"secret", "rm", "a/b"}, "secret name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errs := runCLIIn(t, tc.stdin, env, tc.args...)
			if code != exitUsage || !strings.Contains(errs, tc.says) {
				t.Fatalf("exit %d, stderr %q: want %d naming %q", code, errs, exitUsage, tc.says)
			}
		})
	}
	if entries, _ := os.ReadDir(filepath.Join(dataDir, "secrets")); len(entries) != 2 {
		t.Fatalf("refused commands changed the store: %v", entries)
	}
	if _, err := os.Stat(filepath.Join(dataDir, "escape")); err == nil {
		t.Fatal("a name with ../ wrote outside the store")
	}

	if code, _, errs := runCLIIn(t, "", env, "secret", "rm", "db"); code != 0 {
		t.Fatalf("secret rm: exit %d %s", code, errs)
	}
	if code, _, errs := runCLIIn(t, "", env, "secret", "rm", "db"); code != exitError || !strings.Contains(errs, "does not exist") {
		t.Fatalf("secret rm of a removed secret: exit %d %s", code, errs)
	}
}

// TestSecretEnvFlags: --env KEY=secret://NAME and --secret-env KEY=NAME
// are checked before anything is sent, and a plain value under a name
// that looks secret draws a warning on stderr (it is kept in plaintext
// forever) but is not refused. Issue 12 item 6.
func TestSecretEnvFlags(t *testing.T) {
	// Nothing listens there: a command that gets as far as connecting fails
	// with exit 1 after its warnings.
	env := map[string]string{"TURNSTILE_NATS_URL": "nats://127.0.0.1:1"}
	t.Run("PlainSecretWarned", func(t *testing.T) {
		code, _, errs := runCLIIn(t, "", env, "create", "w", "--env", "DB_PASSWORD=hunter2", "--env", "API_TOKEN=x", "--timeout", "5s")
		if code != exitError || !strings.Contains(errs, "warning: --env DB_PASSWORD has a plain value") ||
			!strings.Contains(errs, "warning: --env API_TOKEN") || !strings.Contains(errs, "secret://") {
			t.Fatalf("exit %d, stderr %q", code, errs)
		}
	})
	t.Run("ReferenceNotWarned", func(t *testing.T) {
		code, _, errs := runCLIIn(t, "", env, "create", "w", "--env", "DB_PASSWORD=secret://db", "--secret-env", "API_TOKEN=api", "--env", "GREETING=hi", "--timeout", "5s")
		if code != exitError || strings.Contains(errs, "warning") {
			t.Fatalf("exit %d, stderr %q", code, errs)
		}
	})
	for _, tc := range []struct {
		name string
		args []string
		says string
	}{
		{"BadReference", []string{"create", "w", "--env", "DB_PASSWORD=secret://a/b"}, "spec.env[DB_PASSWORD]"},
		{"BadSecretEnv", []string{"create", "w", "--secret-env", "DB_PASSWORD=../x"}, "--secret-env"},
		{"SecretEnvWithoutName", []string{"configure", "w", "--secret-env", "DB_PASSWORD"}, "--secret-env"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errs := runCLIIn(t, "", env, tc.args...)
			if code != exitUsage || !strings.Contains(errs, tc.says) {
				t.Fatalf("exit %d, stderr %q: want %d naming %q", code, errs, exitUsage, tc.says)
			}
		})
	}
}
