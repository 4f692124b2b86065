package projector

// DecodeSlowly makes p decode every message with the events package alone,
// without the fast path, for tests that compare the two.
func DecodeSlowly(p *Projector) { p.dec.slow = true }
