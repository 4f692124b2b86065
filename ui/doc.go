// Package ui serves the timeline page: a static page (HTML, JS and CSS
// embedded in the binary, no build step) that watches workspaces through
// the HTTP API as any other client does.
//
// Guarantees:
//   - The files carry no data and no secret: the page reads everything with
//     the bearer token the person gives it (in the URL fragment, which a
//     browser never sends, or in its form), kept in the tab's
//     sessionStorage and sent as Authorization on each API request. So the
//     page routes are the only ones besides the health checks that answer
//     without a token (Public), and no API read does.
//   - Every answer forbids what the page does not need: a Content-Security-
//     Policy of 'self' only (no inline script or style, no other origin,
//     no framing), nosniff and no Referer.
//   - Only the embedded files are served, by exact name: no directory
//     listings, no other path.
package ui
