package secrets_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/turnstile-dev/turnstile/fsm"
	"github.com/turnstile-dev/turnstile/secrets"
)

func ctx(t *testing.T) context.Context {
	t.Helper()
	c, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return c
}

// TestStore: secrets are files of mode 0600 in a directory of mode 0700,
// replaced atomically; List shows names, sizes and digests, never values;
// bad names and values are refused and change nothing. Issue 12 item 6.
func TestStore(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "secrets")
	s := secrets.NewStore(dir)

	t.Run("EmptyBeforeFirstSet", func(t *testing.T) {
		list, err := s.List(ctx(t))
		if err != nil || len(list) != 0 {
			t.Fatalf("List = %v, %v", list, err)
		}
		if _, err := s.Get(ctx(t), "db"); !errors.Is(err, secrets.ErrNotFound) {
			t.Fatalf("Get of an absent secret: %v", err)
		}
	})

	t.Run("Modes", func(t *testing.T) {
		if _, err := s.Set(ctx(t), "db", []byte("first-value")); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Set(ctx(t), "db", []byte("second-value")); err != nil {
			t.Fatal(err)
		}
		assertMode(t, dir, 0o700)
		assertMode(t, filepath.Join(dir, "db"), 0o600)
		v, err := s.Get(ctx(t), "db")
		if err != nil || string(v) != "second-value" {
			t.Fatalf("Get = %q, %v", v, err)
		}
		entries, err := os.ReadDir(dir)
		if err != nil || len(entries) != 1 {
			t.Fatalf("the directory holds %v (%v): want only db, no temporary files", entries, err)
		}
	})

	t.Run("LooseDirectoryTightened", func(t *testing.T) {
		if err := os.Chmod(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Set(ctx(t), "other", []byte("x")); err != nil {
			t.Fatal(err)
		}
		assertMode(t, dir, 0o700)
	})

	t.Run("ListShowsNoValue", func(t *testing.T) {
		list, err := s.List(ctx(t))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(list)
		if strings.Contains(string(b), "second-value") || len(list) != 2 || list[0].Name != "db" ||
			list[0].Size != len("second-value") || list[0].Digest != secrets.Digest([]byte("second-value")) || len(list[0].Digest) != 8 {
			t.Fatalf("List = %s", b)
		}
	})

	t.Run("Refused", func(t *testing.T) {
		for _, tc := range []struct {
			name, value, says string
		}{
			{"../escape", "v", "secret name"},
			{".hidden", "v", "secret name"},
			{"a/b", "v", "secret name"},
			{"", "v", "secret name"},
			{"empty", "", "empty"},
			{"big", strings.Repeat("x", secrets.MaxValueLen+1), "at most"},
			{"nul", "a\x00b", "NUL"},
			{"nested", fsm.SecretScheme + "db", "do not nest"},
		} {
			_, err := s.Set(ctx(t), tc.name, []byte(tc.value))
			if err == nil || !strings.Contains(err.Error(), tc.says) {
				t.Errorf("Set(%q) = %v, want an error saying %q", tc.name, err, tc.says)
			}
			if err != nil && len(tc.value) > 3 && strings.Contains(err.Error(), tc.value) {
				t.Errorf("Set(%q): the error %q holds the value", tc.name, err)
			}
		}
		if _, err := os.Stat(filepath.Join(filepath.Dir(dir), "escape")); err == nil {
			t.Fatal("a name with ../ wrote outside the store")
		}
		list, _ := s.List(ctx(t))
		if len(list) != 2 {
			t.Fatalf("refused sets changed the store: %v", list)
		}
	})

	t.Run("Remove", func(t *testing.T) {
		if err := s.Remove(ctx(t), "other"); err != nil {
			t.Fatal(err)
		}
		if err := s.Remove(ctx(t), "other"); !errors.Is(err, secrets.ErrNotFound) {
			t.Fatalf("second Remove: %v", err)
		}
	})
}

// TestResolver: references are replaced by values from the first source
// that has them, the spec given is not changed, and a missing secret is a
// *MissingError naming the secret and the variable. Issue 12 item 6.
func TestResolver(t *testing.T) {
	a := secrets.NewStore(filepath.Join(t.TempDir(), "a"))
	b := secrets.NewStore(filepath.Join(t.TempDir(), "b"))
	for _, kv := range [][3]string{{"a", "shared", "from-a"}, {"b", "shared", "from-b"}, {"b", "only-b", "b-value"}} {
		st := a
		if kv[0] == "b" {
			st = b
		}
		if _, err := st.Set(ctx(t), kv[1], []byte(kv[2])); err != nil {
			t.Fatal(err)
		}
	}
	r := secrets.NewResolver(a, b)
	spec := fsm.Spec{Env: map[string]string{"S": "secret://shared", "O": "secret://only-b", "P": "plain"}}
	got, err := r.Resolve(ctx(t), spec)
	if err != nil {
		t.Fatal(err)
	}
	if got.Env["S"] != "from-a" || got.Env["O"] != "b-value" || got.Env["P"] != "plain" {
		t.Fatalf("resolved env %v", got.Env)
	}
	if spec.Env["S"] != "secret://shared" {
		t.Fatalf("Resolve changed the spec it was given: %v", spec.Env)
	}
	_, err = r.Resolve(ctx(t), fsm.Spec{Env: map[string]string{"TOKEN": "secret://nope", "S": "secret://shared"}})
	var missing *secrets.MissingError
	if !errors.As(err, &missing) || missing.Name != "nope" || missing.Env != "TOKEN" ||
		!strings.Contains(err.Error(), a.Dir()) || strings.Contains(err.Error(), "from-a") {
		t.Fatalf("missing secret: %v", err)
	}
}

func assertMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != want {
		t.Fatalf("%s has mode %o, want %o", path, got, want)
	}
}

// TestStoreReadsOnlyItsOwnFiles: a secret is a regular file inside the
// store's directory, read up to MaxValueLen. A link out of the directory
// (to serve's own keys in the data dir, to /etc/shadow) would hand that
// file to every workspace that names the secret; a FIFO held the
// provisioning attempt in a read no deadline ends; a huge file (or a link
// to /dev/zero) was read whole into memory. Links within the directory,
// as Kubernetes mounts secrets, still work. Found in review.
func TestStoreReadsOnlyItsOwnFiles(t *testing.T) {
	dataDir := t.TempDir()
	dir := filepath.Join(dataDir, "secrets")
	s := secrets.NewStore(dir)
	if _, err := s.Set(ctx(t), "plain", []byte("plain-value")); err != nil {
		t.Fatal(err)
	}
	const key = "SUAADMINSEEDOFSERVE"
	if err := os.WriteFile(filepath.Join(dataDir, "nats-admin-nkey"), []byte(key), 0o600); err != nil {
		t.Fatal(err)
	}
	mustLink := func(target, name string) {
		t.Helper()
		if err := os.Symlink(target, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	mustLink("../nats-admin-nkey", "relative-out")
	mustLink(filepath.Join(dataDir, "nats-admin-nkey"), "absolute-out")
	mustLink("/dev/zero", "zero")
	if err := os.MkdirAll(filepath.Join(dir, "..2026_12_05", "sub"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "..2026_12_05", "k8s"), []byte("k8s-value"), 0o600); err != nil {
		t.Fatal(err)
	}
	mustLink("..2026_12_05", "..data")
	mustLink("..data/k8s", "k8s")
	if err := syscall.Mkfifo(filepath.Join(dir, "fifo"), 0o600); err != nil {
		t.Fatal(err)
	}
	big, err := os.Create(filepath.Join(dir, "big"))
	if err != nil {
		t.Fatal(err)
	}
	if err := big.Truncate(256 << 20); err != nil { // sparse: no disk used
		t.Fatal(err)
	}
	_ = big.Close()

	for name, want := range map[string]string{"plain": "plain-value", "k8s": "k8s-value"} {
		if v, err := s.Get(ctx(t), name); err != nil || string(v) != want {
			t.Errorf("Get(%s) = %q, %v; want %q", name, v, err, want)
		}
	}
	for _, name := range []string{"relative-out", "absolute-out", "zero", "fifo", "big"} {
		t.Run(name, func(t *testing.T) {
			type got struct {
				v   []byte
				err error
			}
			done := make(chan got, 1)
			go func() {
				v, err := s.Get(ctx(t), name)
				done <- got{v, err}
			}()
			select {
			case g := <-done:
				if g.err == nil || errors.Is(g.err, secrets.ErrNotFound) {
					t.Fatalf("Get(%s) = %d bytes, %v; want an error saying why the file is not a secret", name, len(g.v), g.err)
				}
				if strings.Contains(g.err.Error(), key) {
					t.Fatalf("Get(%s): the error holds the file's content: %v", name, g.err)
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("Get(%s) has not returned after 10s", name)
			}
		})
	}
	if list, err := s.List(ctx(t)); err == nil || strings.Contains(err.Error(), key) {
		t.Fatalf("List = %+v, %v; want an error naming the file that is not a secret", list, err)
	}
	r := secrets.NewResolver(s)
	_, err = r.Resolve(ctx(t), fsm.Spec{Env: map[string]string{"K": "secret://relative-out"}})
	if err == nil || strings.Contains(err.Error(), key) {
		t.Fatalf("Resolve of a link out of the store: %v", err)
	}
}
