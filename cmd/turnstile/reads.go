package main

import (
	"context"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/turnstile-dev/turnstile/api"
	"github.com/turnstile-dev/turnstile/apiclient"
	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/read"
)

// reader is what get, list and history read, over the HTTP API or
// directly from PostgreSQL and NATS: the same views either way.
type reader interface {
	get(ctx context.Context, id string) (api.Workspace, error)
	list(ctx context.Context, o read.ListOptions) (api.WorkspaceList, error)
	history(ctx context.Context, id string) ([]api.Event, error)
	// api is the HTTP client, nil on the direct path (watching and
	// following need it).
	api() *apiclient.Client
	close()
}

// reader returns the HTTP reader when apiClient says so, else the direct
// one, which connects on first use.
func (a *app) reader() (reader, error) {
	c, ok, err := a.apiClient()
	if err != nil {
		return nil, err
	}
	if ok {
		return httpReader{c}, nil
	}
	return &directReader{a: a}, nil
}

type httpReader struct{ c *apiclient.Client }

func (h httpReader) get(ctx context.Context, id string) (api.Workspace, error) {
	return h.c.Get(ctx, id)
}
func (h httpReader) list(ctx context.Context, o read.ListOptions) (api.WorkspaceList, error) {
	return h.c.List(ctx, o)
}
func (h httpReader) history(ctx context.Context, id string) ([]api.Event, error) {
	return h.c.History(ctx, id)
}
func (h httpReader) api() *apiclient.Client { return h.c }
func (h httpReader) close()                 {}

// directReader reads PostgreSQL and the event stream itself.
type directReader struct {
	a          *app
	pool       *pgxpool.Pool
	store      *events.Store
	closeStore func()
}

func (d *directReader) openPool(ctx context.Context) (*pgxpool.Pool, error) {
	if d.pool == nil {
		p, err := d.a.openPool(ctx)
		if err != nil {
			return nil, err
		}
		d.pool = p
	}
	return d.pool, nil
}

func (d *directReader) openStore(ctx context.Context) (*events.Store, error) {
	if d.store == nil {
		s, _, closeFn, err := d.a.openStore(ctx)
		if err != nil {
			return nil, err
		}
		d.store, d.closeStore = s, closeFn
	}
	return d.store, nil
}

func (d *directReader) get(ctx context.Context, id string) (api.Workspace, error) {
	pool, err := d.openPool(ctx)
	if err != nil {
		return api.Workspace{}, err
	}
	store, err := d.openStore(ctx)
	if err != nil {
		return api.Workspace{}, err
	}
	return read.GetWorkspace(ctx, pool, store, id)
}

func (d *directReader) list(ctx context.Context, o read.ListOptions) (api.WorkspaceList, error) {
	pool, err := d.openPool(ctx)
	if err != nil {
		return api.WorkspaceList{}, err
	}
	return read.ListWorkspaces(ctx, pool, o)
}

func (d *directReader) history(ctx context.Context, id string) ([]api.Event, error) {
	store, err := d.openStore(ctx)
	if err != nil {
		return nil, err
	}
	return read.History(ctx, store, id)
}

func (d *directReader) api() *apiclient.Client { return nil }

func (d *directReader) close() {
	if d.pool != nil {
		d.pool.Close()
	}
	if d.closeStore != nil {
		d.closeStore()
	}
}
