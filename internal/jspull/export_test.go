package jspull

// Held is how many messages the pull has received and not yet read: a
// consumer's info counts a delivery before the server has sent it, and a
// drain or a disconnect drops what is still on its way.
func Held(it *Iter) int { return len(it.msgs) }
