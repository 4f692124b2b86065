package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/turnstile-dev/turnstile/api"
)

// TestAPITokens: issue 12 items 2 and 9. Without tokens given, serve
// generates one into <data-dir>/api-token with mode 0600 and reuses it; a
// file others may read, or a short token, is refused with what to do;
// given tokens (flag and file, named) replace the generated one.
func TestAPITokens(t *testing.T) {
	t.Run("GeneratedKeptAndPrivate", func(t *testing.T) {
		dir := t.TempDir()
		first, err := loadAPITokens(dir, serveConfig{})
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, apiTokenFile)
		st, err := os.Stat(path)
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("token file: %v, %v", st, err)
		}
		if len(first.tokens) != 1 || first.tokens[0].Name != api.DefaultTokenName || api.ValidateSecret(first.tokens[0].Secret) != nil {
			t.Fatalf("generated: %v", first.tokens)
		}
		again, err := loadAPITokens(dir, serveConfig{})
		if err != nil || again.tokens[0] != first.tokens[0] {
			t.Fatalf("second start: %v, %v; want the same token", again.tokens, err)
		}
		leftovers, _ := filepath.Glob(filepath.Join(dir, ".api-token.*"))
		if len(leftovers) != 0 {
			t.Fatalf("temporary files left: %v", leftovers)
		}
	})
	t.Run("OpenToOthersRefused", func(t *testing.T) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, apiTokenFile), []byte(strings.Repeat("x", 40)+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := loadAPITokens(dir, serveConfig{}); err == nil || !strings.Contains(err.Error(), "chmod 600") {
			t.Fatalf("a 0644 token file: %v", err)
		}
	})
	t.Run("ShortStoredTokenRefused", func(t *testing.T) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, apiTokenFile), []byte("short\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := loadAPITokens(dir, serveConfig{})
		if err == nil || !strings.Contains(err.Error(), "turnstile token") || strings.Contains(err.Error(), "short\n") {
			t.Fatalf("a short stored token: %v", err)
		}
	})
	t.Run("GivenTokensReplaceTheGenerated", func(t *testing.T) {
		dir := t.TempDir()
		file := filepath.Join(dir, "tokens")
		ci := "ci:" + strings.Repeat("c", 40)
		if err := os.WriteFile(file, []byte("# callers\n\n"+ci+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		src, err := loadAPITokens(dir, serveConfig{apiTokens: []string{strings.Repeat("d", 32)}, apiTokenFile: file})
		if err != nil {
			t.Fatal(err)
		}
		if len(src.tokens) != 2 || src.tokens[0].Name != "default" || src.tokens[1].Name != "ci" || src.generated != "" {
			t.Fatalf("tokens %v", src.tokens)
		}
		if _, err := os.Stat(filepath.Join(dir, apiTokenFile)); !os.IsNotExist(err) {
			t.Fatalf("a token file was generated beside given tokens: %v", err)
		}
		for _, c := range []serveConfig{
			{apiTokens: []string{"short"}},
			{apiTokens: []string{ci, ci}},
		} {
			if _, err := loadAPITokens(dir, c); err == nil || codeOf(err, true) != exitUsage {
				t.Errorf("tokens %v: %v, want a usage error", c.apiTokens, err)
			}
		}
	})
	t.Run("TokenCommand", func(t *testing.T) {
		code, out, errs := runCLI(t, nil, "token", "--name", "ci")
		name, secret, _ := strings.Cut(strings.TrimSpace(out), ":")
		if code != 0 || name != "ci" || api.ValidateSecret(secret) != nil {
			t.Fatalf("token --name ci: exit %d, %q %q", code, out, errs)
		}
		code, out2, _ := runCLI(t, nil, "token")
		if code != 0 || api.ValidateSecret(strings.TrimSpace(out2)) != nil || strings.TrimSpace(out2) == secret {
			t.Fatalf("token: exit %d, %q", code, out2)
		}
	})
}
