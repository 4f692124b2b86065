// Package read answers the questions asked of Turnstile without changing
// it: a workspace, a page of workspaces, counts by state, a workspace's
// timeline, and waiting for a state. The HTTP API and the CLI's direct
// mode both read through it, so a read means the same wherever it is made.
//
// Guarantees:
//   - Reads say what they reflect: a workspace from the PostgreSQL read
//     model carries the event sequence and generation it is current to,
//     and a single workspace's read also names the newest event in the
//     stream; a list page carries the projector checkpoint of the same
//     snapshot.
//   - A list page is one SQL statement (rows and checkpoint together),
//     keyset-paged by id: the cost of a page does not grow with the page
//     number, and Next is the cursor of the following page.
//   - A history page starts reading at its cursor (HistoryPage: a binary
//     search over stream sequences finds event after), so its cost does
//     not grow with the page number either.
//   - History and waiting read the event store, the source of truth, not
//     the read model: a wait ends on the state the stream holds.
//   - Nothing here writes: no command, event or row.
package read
