package engine

import (
	"sync"

	"github.com/turnstile-dev/turnstile/events"
)

// headCache remembers the head each workspace had after this engine's last
// append, saving a load per accepted command. It is used only where a
// compare-and-set checks it (an append): a stale entry (another engine
// appended) then costs one conflict and a reload. Decisions that append
// nothing are made on a fresh load.
type headCache struct {
	mu    sync.Mutex
	max   int
	heads map[string]events.Head
}

func newHeadCache(max int) *headCache {
	return &headCache{max: max, heads: make(map[string]events.Head)}
}

func (c *headCache) get(ws string) (events.Head, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	h, ok := c.heads[ws]
	return h, ok
}

func (c *headCache) put(ws string, h events.Head) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.heads) >= c.max {
		// Evict an arbitrary entry: map order is random enough here.
		for k := range c.heads {
			delete(c.heads, k)
			break
		}
	}
	c.heads[ws] = h
}

func (c *headCache) drop(ws string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.heads, ws)
}

// dropWhere forgets the heads of the workspaces in: their partition moved
// to this engine, and others may have appended meanwhile.
func (c *headCache) dropWhere(in func(ws string) bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for ws := range c.heads {
		if in(ws) {
			delete(c.heads, ws)
		}
	}
}
