package layering_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const (
	module = "github.com/turnstile-dev/turnstile"
	// table names where the rules live, in every failure.
	table = `docs/architecture.md, table "Layering"`
)

// jetStreamClients are the packages that talk to JetStream: the event log
// belongs to events, and the table names every other user and why.
var jetStreamClients = []string{"github.com/nats-io/nats.go/jetstream", "github.com/synadia-io/orbit.go/jetstreamext"}

// rule is one row of the table.
type rule struct {
	mayImport map[string]bool
	jetStream bool
}

func TestLayering(t *testing.T) {
	root := moduleRoot(t)
	rules := readTable(t, filepath.Join(root, "docs", "architecture.md"))
	pkgs := listPackages(t, root)
	seen := map[string]bool{}
	for _, p := range pkgs {
		rel := strings.TrimPrefix(strings.TrimPrefix(p.ImportPath, module), "/")
		seen[rel] = true
		r, ok := rules[rel]
		if !ok {
			t.Errorf("package %s has no row in %s: add one saying which of our packages it may import and whether it uses JetStream", rel, table)
			continue
		}
		for _, imp := range p.Imports {
			switch {
			case slices.Contains(jetStreamClients, imp) && !r.jetStream:
				t.Errorf("package %s imports %s, but %s says it does not use JetStream: go through package events (or change the table, with the reason)", rel, imp, table)
			case strings.HasPrefix(imp, module+"/"):
				dep := strings.TrimPrefix(imp, module+"/")
				if !r.mayImport[dep] {
					t.Errorf("package %s imports %s, which %s does not allow it", rel, dep, table)
				}
			}
		}
	}
	for rel := range rules {
		if !seen[rel] {
			t.Errorf("%s has a row for %s, which is not a package of this module: remove or rename it", table, rel)
		}
	}
}

// readTable parses the rows of the table that follows the "## Layering"
// heading: | `package` | `dep`, `dep` | no / yes: why |.
func readTable(t *testing.T, path string) map[string]rule {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rules := map[string]rule{}
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case strings.HasPrefix(line, "## "):
			in = line == "## Layering"
			continue
		case !in || !strings.HasPrefix(line, "|") || strings.HasPrefix(line, "|---") || strings.HasPrefix(line, "| package"):
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		if len(cells) != 3 {
			t.Fatalf("%s: row %q: want 3 cells (package, may import, JetStream)", table, line)
		}
		pkg := strings.Trim(strings.TrimSpace(cells[0]), "`")
		r := rule{mayImport: map[string]bool{}}
		for _, d := range strings.Split(cells[1], ",") {
			if d = strings.Trim(strings.TrimSpace(d), "`"); d != "" && d != "—" {
				r.mayImport[d] = true
			}
		}
		js := strings.TrimSpace(cells[2])
		switch {
		case js == "no":
		case strings.HasPrefix(js, "yes:") && len(strings.TrimSpace(js[4:])) > 0:
			r.jetStream = true
		default:
			t.Fatalf("%s: row %s: JetStream cell %q: want \"no\" or \"yes: <why>\"", table, pkg, js)
		}
		if _, dup := rules[pkg]; dup {
			t.Fatalf("%s: two rows for %s", table, pkg)
		}
		rules[pkg] = r
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(rules) == 0 {
		t.Fatalf("%s: no rows found", table)
	}
	return rules
}

type goPackage struct {
	ImportPath string
	Imports    []string // not the tests': tests may use anything
}

func listPackages(t *testing.T, root string) []goPackage {
	t.Helper()
	cmd := exec.Command("go", "list", "-json=ImportPath,Imports", "./...")
	cmd.Dir = root
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.String())
	}
	var pkgs []goPackage
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p goPackage
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, p)
	}
	return pkgs
}

func moduleRoot(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Dir(strings.TrimSpace(string(out)))
}
