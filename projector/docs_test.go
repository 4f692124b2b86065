package projector_test

import (
	"context"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestDocumentedQueries runs every query of docs/operations.md's "Querying
// with SQL" section against a populated read model: the documentation
// cannot drift from the schema.
func TestDocumentedQueries(t *testing.T) {
	queries := documentedQueries(t, "../docs/operations.md", "## Querying with SQL")
	if len(queries) < 8 {
		t.Fatalf("%d documented queries, want at least 8", len(queries))
	}
	e := newEnv(t)
	g := newGenerator(e.names, 50, 10)
	g.publish(t, e.js, 3000)
	stop := run(t, e.projector(t, nil))
	e.waitCaughtUp(t, 30*time.Second)
	stop()

	// Results that the generated history is sure to produce.
	minRows := map[string]int{
		"workspaces-by-status": 2, "failed-last-hour": 1, "failed-now": 1, "timeline": 2, "state-as-of": 1,
		"rejected": 1, "rejections-by-code": 2, "provisioning-time": 1, "provisioning-percentiles": 1,
		"stale-outcomes": 1, "busiest": 10, "decision-latency": 3, "checkpoint": 1,
	}
	for _, q := range queries {
		t.Run(q.name, func(t *testing.T) {
			rows, err := e.pool.Query(context.Background(), q.sql)
			if err != nil {
				t.Fatal(err)
			}
			n := 0
			for rows.Next() {
				n++
			}
			if err := rows.Err(); err != nil {
				t.Fatalf("%v\n%s", err, q.sql)
			}
			if n < minRows[q.name] {
				t.Fatalf("%d rows, want at least %d:\n%s", n, minRows[q.name], q.sql)
			}
		})
	}
}

type docQuery struct{ name, sql string }

var queryBlock = regexp.MustCompile("(?s)<!-- query: ([a-z0-9-]+) -->\\s*```sql\\n(.*?)```")

// documentedQueries extracts the marked sql blocks of one section.
func documentedQueries(t *testing.T, path, heading string) []docQuery {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	i := strings.Index(doc, heading+"\n")
	if i < 0 {
		t.Fatalf("%s has no section %q", path, heading)
	}
	section := doc[i+len(heading):]
	if j := strings.Index(section, "\n## "); j >= 0 {
		section = section[:j]
	}
	if unmarked := strings.Count(section, "```sql") - len(queryBlock.FindAllString(section, -1)); unmarked != 0 {
		t.Fatalf("%d sql blocks lack a <!-- query: name --> marker, so no test runs them", unmarked)
	}
	var out []docQuery
	for _, m := range queryBlock.FindAllStringSubmatch(section, -1) {
		out = append(out, docQuery{name: m[1], sql: m[2]})
	}
	return out
}
