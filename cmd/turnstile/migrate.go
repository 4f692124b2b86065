package main

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/stdlib"
	"github.com/spf13/cobra"

	"github.com/turnstile-dev/turnstile/migrations"
)

func (a *app) migrateCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "migrate",
		Short: "Apply or show the read model's schema migrations",
		Args:  exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return usageError(fmt.Errorf("say which: turnstile migrate up, or turnstile migrate status"))
		},
	}
	c.AddCommand(&cobra.Command{
		Use:   "up",
		Short: "Apply every pending migration (serve does this at start)",
		Args:  exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.withDB(cmd.Context(), func(ctx context.Context, db *sql.DB) error {
				if err := migrations.Up(ctx, db); err != nil {
					return err
				}
				return a.printMigrations(ctx, db)
			})
		},
	}, &cobra.Command{
		Use:   "status",
		Short: "List the migrations and whether each is applied",
		Args:  exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.withDB(cmd.Context(), a.printMigrations)
		},
	})
	return c
}

func (a *app) withDB(ctx context.Context, fn func(context.Context, *sql.DB) error) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	pool, err := a.openOwnerPool(ctx)
	if err != nil {
		return err
	}
	defer pool.Close()
	db := stdlib.OpenDBFromPool(pool)
	defer db.Close()
	return fn(ctx, db)
}

func (a *app) printMigrations(ctx context.Context, db *sql.DB) error {
	ms, err := migrations.Status(ctx, db)
	if err != nil {
		return err
	}
	if a.structured() {
		return a.print(ms)
	}
	t := newTable(a.out, "VERSION", "NAME", "APPLIED")
	for _, m := range ms {
		applied := "pending"
		if m.Applied {
			applied = formatTime(m.AppliedAt)
		}
		t.row(fmt.Sprint(m.Version), m.Name, applied)
	}
	return t.flush()
}
