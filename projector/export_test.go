package projector

import "time"

// DecodeSlowly makes p decode every message with the events package alone,
// without the fast path, for tests that compare the two.
func DecodeSlowly(p *Projector) { p.dec.slow = true }

// Overlap makes a batch in flight wait up to d for the next one, so that
// tests of two batches in flight get them.
func Overlap(p *Projector, d time.Duration) { p.linger = d }

// ConnWait bounds how long p's rebuilds wait for their copiers'
// connections.
func ConnWait(p *Projector, d time.Duration) { p.connWait = d }

// CopyColumns are the columns a rebuild copies, per table, in the order
// its binary encoders write them.
var CopyColumns = map[string][]string{
	"workspace_events": eventCopyColumns, "commands": commandCopyColumns, "workspaces": workspaceCopyColumns,
}
