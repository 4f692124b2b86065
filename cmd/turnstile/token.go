package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/turnstile-dev/turnstile/api"
	"github.com/turnstile-dev/turnstile/internal/atomicfile"
)

// apiTokenFile is where serve keeps the API token it generated, in the
// data dir, so that curl and scripts find it as the CLI finds database-url.
const apiTokenFile = "api-token"

// apiTokenSource is where serve's API tokens came from, for the banner.
type apiTokenSource struct {
	tokens []api.Token
	// generated is the path of the data dir's token file when it is the
	// source ("" when the tokens were given).
	generated string
	note      string
}

// loadAPITokens returns the tokens of --api-token and --api-token-file;
// without either, the token kept in <dataDir>/api-token, generated on first
// start.
func loadAPITokens(dataDir string, c serveConfig) (apiTokenSource, error) {
	var tokens []api.Token
	var from []string
	for _, s := range c.apiTokens {
		t, err := api.ParseToken(s)
		if err != nil {
			return apiTokenSource{}, usageError(fmt.Errorf("--api-token: %w", err))
		}
		tokens = append(tokens, t)
	}
	if len(c.apiTokens) > 0 {
		from = append(from, "--api-token")
	}
	if c.apiTokenFile != "" {
		ft, err := apiTokenParseFile(c.apiTokenFile)
		if err != nil {
			return apiTokenSource{}, usageError(fmt.Errorf("--api-token-file: %w", err))
		}
		tokens = append(tokens, ft...)
		from = append(from, c.apiTokenFile)
	}
	if len(tokens) > 0 {
		if err := api.ValidateTokens(tokens); err != nil {
			return apiTokenSource{}, usageError(err)
		}
		return apiTokenSource{tokens: tokens, note: fmt.Sprintf("%d token(s) from %s", len(tokens), strings.Join(from, " and "))}, nil
	}
	path := filepath.Join(dataDir, apiTokenFile)
	secret, made, err := apiTokenKeep(path)
	if err != nil {
		return apiTokenSource{}, err
	}
	note := "token in " + path
	if made {
		note = "token generated into " + path
	}
	return apiTokenSource{tokens: []api.Token{{Name: api.DefaultTokenName, Secret: secret}}, generated: path, note: note}, nil
}

// apiTokenParseFile reads one token a line, NAME:SECRET or SECRET; blank
// lines and lines starting with # are skipped. Like ssh with its keys, it
// refuses a file others may read.
func apiTokenParseFile(path string) ([]api.Token, error) {
	b, err := apiTokenReadFile(path)
	if err != nil {
		return nil, err
	}
	var tokens []api.Token
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		t, err := api.ParseToken(line)
		if err != nil {
			return nil, fmt.Errorf("%s line %d: %w", path, n, err)
		}
		tokens = append(tokens, t)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(tokens) == 0 {
		return nil, fmt.Errorf("%s has no token: write one NAME:SECRET a line (turnstile token makes a secret)", path)
	}
	return tokens, nil
}

// apiTokenReadFile reads a file holding secrets, refusing it when its mode
// lets anyone but its owner read or write it.
func apiTokenReadFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("%s holds secrets but its mode is %04o, open to others: chmod 600 %s", path, perm, path)
	}
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(f); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return buf.Bytes(), nil
}

// apiTokenKeep returns the secret in path, or makes one and writes it there
// (mode 0600, atomically: a temporary file renamed into place, so a crash
// never leaves a partial token). made says which.
func apiTokenKeep(path string) (secret string, made bool, err error) {
	b, err := apiTokenReadFile(path)
	switch {
	case err == nil:
		secret = strings.TrimSpace(string(b))
		if err := api.ValidateSecret(secret); err != nil {
			return "", false, fmt.Errorf("%s: %w; or delete the file to have serve make a new one", path, err)
		}
		return secret, false, nil
	case !errors.Is(err, fs.ErrNotExist):
		return "", false, fmt.Errorf("the API token: %w", err)
	}
	if secret, err = api.NewSecret(); err != nil {
		return "", false, err
	}
	if err := atomicfile.Write(path, []byte(secret+"\n"), 0o600); err != nil {
		return "", false, fmt.Errorf("write the API token: %w", err)
	}
	return secret, true, nil
}

// tokenCmd prints a fresh API token secret.
func (a *app) tokenCmd() *cobra.Command {
	var name string
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Print a fresh random API token for serve's --api-token or --api-token-file",
		Long: `Print a fresh random token (32 bytes from the system's secure random source,
base64url: 43 characters). Give it to serve with --api-token, TURNSTILE_API_TOKEN
or a line of --api-token-file; with --name the line is NAME:SECRET, and the
commands sent with the token are recorded with the actor api:NAME.
Without any of these, serve makes one itself into <data-dir>/api-token.`,
		Args: exactArgs(),
		RunE: func(*cobra.Command, []string) error {
			secret, err := api.NewSecret()
			if err != nil {
				return err
			}
			if name == "" {
				fmt.Fprintln(a.out, secret)
				return nil
			}
			t := api.Token{Name: name, Secret: secret}
			if err := t.Validate(); err != nil {
				return usageError(fmt.Errorf("--name: %w", err))
			}
			fmt.Fprintln(a.out, name+":"+secret)
			return nil
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "print NAME:SECRET, the token's name being recorded as the actor api:NAME")
	return cmd
}
