package secrets

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/internal/atomicfile"
)

// MaxValueLen bounds a secret's value: it becomes an env value, which a
// spec bounds the same way.
const MaxValueLen = fsm.MaxValueLen

// ErrNotFound means a source has no secret of that name.
var ErrNotFound = errors.New("secret not found")

// Info describes a stored secret without its value.
type Info struct {
	Name string `json:"name"`
	Size int    `json:"size"`
	// Digest is the first 8 hex digits of the value's SHA-256: enough to
	// tell one version from another, too short to confirm a guess.
	Digest  string    `json:"digest"`
	Updated time.Time `json:"updated_at"`
}

// Store is a directory of secrets, one file per name. It is safe for
// concurrent use, also by several processes (serve reads, the CLI writes).
type Store struct {
	dir string
}

// NewStore returns the store in dir; nothing is touched until it is used.
func NewStore(dir string) *Store { return &Store{dir: dir} }

// Dir is the store's directory.
func (s *Store) Dir() string { return s.dir }

// ValidateValue checks a value before it is stored: not empty, at most
// MaxValueLen bytes, no NUL byte (an env value cannot hold one), and not
// itself a reference. The message never contains the value.
func ValidateValue(value []byte) error {
	switch {
	case len(value) == 0:
		return errors.New("the value is empty")
	case len(value) > MaxValueLen:
		return fmt.Errorf("the value is %d bytes: at most %d allowed", len(value), MaxValueLen)
	case slices.Contains(value, 0):
		return errors.New("the value contains a NUL byte, which no environment variable can hold")
	case strings.HasPrefix(string(value), fsm.SecretScheme):
		return fmt.Errorf("the value starts with %s: references do not nest", fsm.SecretScheme)
	}
	return nil
}

// Set stores value under name, replacing any older value atomically.
func (s *Store) Set(ctx context.Context, name string, value []byte) (Info, error) {
	if err := fsm.ValidateSecretName(name); err != nil {
		return Info{}, err
	}
	if err := ValidateValue(value); err != nil {
		return Info{}, fmt.Errorf("secret %q: %w", name, err)
	}
	if err := ctx.Err(); err != nil {
		return Info{}, err
	}
	if err := s.ensureDir(); err != nil {
		return Info{}, err
	}
	if err := atomicfile.Write(s.path(name), value, 0o600); err != nil {
		return Info{}, fmt.Errorf("secret %q: %w", name, err)
	}
	return s.stat(name)
}

// Get returns name's value, or an error matching ErrNotFound.
func (s *Store) Get(ctx context.Context, name string) ([]byte, error) {
	if err := fsm.ValidateSecretName(name); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	b, _, err := s.read(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %q in %s", ErrNotFound, name, s.dir)
	}
	if err != nil {
		return nil, fmt.Errorf("secret %q: %w", name, err)
	}
	return b, nil
}

// read returns name's value and its file's description. The file is
// opened through an os.Root of the directory: a symbolic link may point
// within it (Kubernetes mounts each secret as NAME -> ..data/NAME) but
// never out of it, where it could make a secret of serve's own keys or
// /etc/shadow for any workspace that names it. It is opened non-blocking
// (a FIFO would otherwise hold the provisioning attempt in an open that
// no deadline ends), must be a regular file (not a device such as
// /dev/zero), and is read up to MaxValueLen+1 bytes, never whole.
func (s *Store) read(name string) ([]byte, fs.FileInfo, error) {
	root, err := os.OpenRoot(s.dir)
	if err != nil {
		return nil, nil, err
	}
	defer root.Close()
	f, err := root.OpenFile(name, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil, err
		}
		return nil, nil, fmt.Errorf("%w (a secret is a file in %s; a link in it may point only within it)", err, s.dir)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, nil, fmt.Errorf("%s is not a regular file (mode %v)", filepath.Join(s.dir, name), fi.Mode())
	}
	if fi.Size() > MaxValueLen {
		return nil, nil, fmt.Errorf("the value is %d bytes: at most %d allowed", fi.Size(), MaxValueLen)
	}
	b, err := io.ReadAll(io.LimitReader(f, MaxValueLen+1))
	if err != nil {
		return nil, nil, err
	}
	if len(b) > MaxValueLen { // it grew since the stat
		return nil, nil, fmt.Errorf("the value is over %d bytes", MaxValueLen)
	}
	return b, fi, nil
}

// Remove deletes name; an absent name is an error matching ErrNotFound.
func (s *Store) Remove(ctx context.Context, name string) error {
	if err := fsm.ValidateSecretName(name); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	err := os.Remove(s.path(name))
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%w: %q in %s", ErrNotFound, name, s.dir)
	}
	if err != nil {
		return fmt.Errorf("secret %q: %w", name, err)
	}
	syncDir(s.dir)
	return nil
}

// List describes every secret, by name. A store that does not exist yet is
// empty. Files whose names are not secret names (temporary files,
// Kubernetes' ..data links) are skipped.
func (s *Store) List(ctx context.Context) ([]Info, error) {
	entries, err := os.ReadDir(s.dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("secrets: %w", err)
	}
	var out []Info
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if fsm.ValidateSecretName(e.Name()) != nil || e.IsDir() {
			continue
		}
		info, err := s.stat(e.Name())
		if errors.Is(err, fs.ErrNotExist) {
			continue // removed meanwhile
		}
		if err != nil {
			return nil, err
		}
		out = append(out, info)
	}
	return out, nil // ReadDir sorts by name
}

func (s *Store) stat(name string) (Info, error) {
	b, fi, err := s.read(name)
	if err != nil {
		return Info{}, fmt.Errorf("secret %q: %w", name, err)
	}
	return Info{Name: name, Size: len(b), Digest: Digest(b), Updated: fi.ModTime().UTC()}, nil
}

// Digest is the short digest Info shows for value.
func Digest(value []byte) string {
	sum := sha256.Sum256(value)
	return hex.EncodeToString(sum[:4])
}

func (s *Store) path(name string) string { return filepath.Join(s.dir, name) }

// ensureDir makes the directory 0700, also when it exists looser.
func (s *Store) ensureDir() error {
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return fmt.Errorf("secrets: %w", err)
	}
	if err := os.Chmod(s.dir, 0o700); err != nil {
		return fmt.Errorf("secrets: %w", err)
	}
	return nil
}

// syncDir makes a rename or removal in dir durable; best effort, as a
// failure here leaves the change made, only perhaps not yet on disk.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
}
