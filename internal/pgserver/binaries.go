package pgserver

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// DefaultBinDirs are searched, in order, when Options.BinDir is empty.
// PostgreSQL 15 comes first: it is what the project is tested with.
func DefaultBinDirs() []string {
	return []string{
		"/usr/lib/postgresql/15/bin",
		"/usr/lib/postgresql/16/bin",
		"/usr/lib/postgresql/17/bin",
		"/usr/local/pgsql/bin",
	}
}

// FindBinDir returns the first of dirs holding both initdb and postgres,
// falling back to $PATH when dirs is empty.
func FindBinDir(dirs ...string) (string, error) {
	for _, d := range dirs {
		if isExecutable(filepath.Join(d, "initdb")) && isExecutable(filepath.Join(d, "postgres")) {
			return d, nil
		}
	}
	if len(dirs) == 0 {
		if p, err := exec.LookPath("initdb"); err == nil {
			d := filepath.Dir(p)
			if isExecutable(filepath.Join(d, "postgres")) {
				return d, nil
			}
		}
		dirs = []string{"$PATH"}
	}
	return "", fmt.Errorf("PostgreSQL binaries not found in %s: install postgresql-15", strings.Join(dirs, ", "))
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}
