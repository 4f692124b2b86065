package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/secrets"
)

// secretsDirName is the secrets store inside --data-dir. The CLI writes it
// directly, as it reads database-url there: a value never travels over
// NATS or HTTP, where it could land in a stream or a proxy's log.
const secretsDirName = "secrets"

// secretStore is the store in the data dir.
func (a *app) secretStore() *secrets.Store {
	return secrets.NewStore(filepath.Join(a.dataDir, secretsDirName))
}

func (a *app) secretCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "secret",
		Short: "Set, list and remove the secrets that env values secret://NAME refer to",
		Long: `Secrets are kept in <data-dir>/secrets (a 0700 directory, one 0600 file per
secret), on the machine serve runs on. A workspace refers to one with an env value
secret://NAME ('create ID --env DB_PASSWORD=secret://db', or '--secret-env
DB_PASSWORD=db'); only that reference is ever in the event history, the read model
and every response. The provisioner reads the value just before it starts the
container, afresh for every attempt: after 'secret set' a workspace gets the new
value at its next provisioning attempt ('turnstile restart ID'); a running
container keeps the value it started with. The container sees the value as an
ordinary variable (and 'docker inspect' shows it to whoever may use Docker).`,
	}
	c.AddCommand(a.secretSetCmd(), a.secretListCmd(), a.secretRmCmd())
	return c
}

func (a *app) secretSetCmd() *cobra.Command {
	var fromFile string
	c := &cobra.Command{
		Use:   "set NAME",
		Short: "Store a secret's value, read from stdin (one trailing newline dropped) or --from-file (as is)",
		Long: `Store a secret's value, replacing any older one atomically. The value is read
from stdin (without echo on a terminal; one trailing newline is dropped) or from
--from-file (taken byte for byte), never from the command line, where it would land
in the shell's history and in ps. At most 4096 bytes, no NUL byte.`,
		Example: "  printf %s \"$DB_PASSWORD\" | turnstile secret set db\n  turnstile secret set tls-key --from-file ./key.pem",
		Args:    exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if err := fsm.ValidateSecretName(name); err != nil {
				return usageError(err)
			}
			value, err := a.readSecretValue(name, fromFile)
			if err != nil {
				return err
			}
			if err := secrets.ValidateValue(value); err != nil {
				return usageError(fmt.Errorf("secret %s: %w", name, err))
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
			defer cancel()
			if err := os.MkdirAll(a.dataDir, 0o711); err != nil { // as serve makes it
				return fmt.Errorf("data dir: %w", err)
			}
			info, err := a.secretStore().Set(ctx, name, value)
			if err != nil {
				return err
			}
			if a.structured() {
				return a.print(info)
			}
			fmt.Fprintf(a.out, "secret %s set (%d bytes, sha256 %s…); workspaces get it at their next provisioning attempt (turnstile restart ID)\n",
				info.Name, info.Size, info.Digest)
			return nil
		},
	}
	c.Flags().StringVar(&fromFile, "from-file", "", "read the value from this file, byte for byte ('-': stdin)")
	return c
}

// readSecretValue reads a value from --from-file or stdin.
func (a *app) readSecretValue(name, fromFile string) ([]byte, error) {
	limit := int64(secrets.MaxValueLen + 2) // room for a newline, and to notice "too long"
	if fromFile != "" && fromFile != "-" {
		f, err := os.Open(fromFile)
		if err != nil {
			return nil, usageError(fmt.Errorf("--from-file: %w", err))
		}
		defer f.Close()
		return io.ReadAll(io.LimitReader(f, limit))
	}
	if f, ok := a.in.(*os.File); ok && term.IsTerminal(int(f.Fd())) && fromFile == "" {
		fmt.Fprintf(a.err, "Value of secret %s (not echoed): ", name)
		b, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(a.err)
		if err != nil {
			return nil, fmt.Errorf("read the value: %w", err)
		}
		return b, nil
	}
	b, err := io.ReadAll(io.LimitReader(a.in, limit))
	if err != nil {
		return nil, fmt.Errorf("read the value from stdin: %w", err)
	}
	if fromFile == "" { // as the shell's read does: echo, heredocs and files end in one
		b = bytes.TrimSuffix(b, []byte("\n"))
		b = bytes.TrimSuffix(b, []byte("\r"))
	}
	return b, nil
}

func (a *app) secretListCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List the stored secrets: name, size, a short digest and when set; never a value",
		Args:  exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
			defer cancel()
			list, err := a.secretStore().List(ctx)
			if err != nil {
				return err
			}
			if a.structured() {
				if list == nil {
					list = []secrets.Info{}
				}
				return a.print(list)
			}
			t := newTable(a.out, "NAME", "SIZE", "SHA256", "UPDATED")
			for _, s := range list {
				t.row(s.Name, strconv.Itoa(s.Size), s.Digest+"…", formatTime(s.Updated))
			}
			return t.flush()
		},
	}
}

func (a *app) secretRmCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "rm NAME",
		Short: "Remove a secret (running containers keep their value; the next attempt that needs it fails)",
		Args:  exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if err := fsm.ValidateSecretName(name); err != nil {
				return usageError(err)
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
			defer cancel()
			err := a.secretStore().Remove(ctx, name)
			if errors.Is(err, secrets.ErrNotFound) {
				return fmt.Errorf("secret %s does not exist in %s", name, a.secretStore().Dir())
			}
			if err != nil {
				return err
			}
			if a.structured() {
				return a.print(map[string]any{"name": name, "removed": true})
			}
			fmt.Fprintf(a.out, "secret %s removed; running containers keep their value\n", name)
			return nil
		},
	}
}
