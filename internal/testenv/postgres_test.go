package testenv_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/turnstile-dev/turnstile/internal/testenv"
)

func TestPostgres(t *testing.T) {
	ctx := context.Background()
	p := testenv.StartPostgres(t)
	a, b := p.NewDatabase(t), p.NewDatabase(t)
	if a == b {
		t.Fatalf("two tests got the same database %s", a)
	}
	exec := func(url, sql string) error {
		conn, err := pgx.Connect(ctx, url)
		if err != nil {
			return err
		}
		defer conn.Close(ctx)
		_, err = conn.Exec(ctx, sql)
		return err
	}
	if err := exec(a, "CREATE TABLE only_in_a (v int); INSERT INTO only_in_a VALUES (1)"); err != nil {
		t.Fatal(err)
	}
	if err := exec(b, "SELECT * FROM only_in_a"); err == nil {
		t.Fatal("databases are not isolated")
	}
	p.Stop(t)
	if err := exec(a, "SELECT 1"); err == nil {
		t.Fatal("query succeeded on a stopped server")
	}
	p.Start(t)
	if err := exec(a, "SELECT v FROM only_in_a"); err != nil {
		t.Fatalf("after restart: %v", err)
	}
}
