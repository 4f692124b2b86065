package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/gofrs/flock"
)

// dataDirLockFile is the file serve holds an exclusive lock on while it
// runs; it names the holder.
const dataDirLockFile = "serve.lock"

// lockDataDir takes the data dir for this serve until unlock (or the
// process's end: the kernel drops the lock of a killed serve). Two serves
// on one data dir would overwrite each other's api-url, database URLs and
// simulator state, and without --nats-url or --database-url open one
// NATS store or PostgreSQL cluster twice; the default ports refuse the
// second only when both use them. A lock held elsewhere refuses the start
// with exit 1, naming the holder as it wrote itself into the file.
func lockDataDir(dir string) (unlock func() error, err error) {
	path := filepath.Join(dir, dataDirLockFile)
	l := flock.New(path, flock.SetPermissions(0o600))
	ok, err := l.TryLock()
	if err != nil {
		return nil, fmt.Errorf("lock the data dir %s: %w", dir, err)
	}
	if !ok {
		holder, _ := os.ReadFile(path)
		who := strings.TrimSpace(string(holder))
		if who == "" {
			who = "a process that has not said who it is yet"
		}
		return nil, withCode(exitError, fmt.Errorf("another serve runs on the data dir %s (%s holds %s): "+
			"stop it first, or give this one a --data-dir of its own", dir, who, path))
	}
	// The lock is on the file, not its contents: writing them through
	// another descriptor leaves it held.
	if err := os.WriteFile(path, []byte(fmt.Sprintf("serve %s\n", engineName())), 0o600); err != nil {
		_ = l.Unlock()
		return nil, fmt.Errorf("lock the data dir %s: %w", dir, err)
	}
	return l.Unlock, nil
}
