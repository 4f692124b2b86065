// Package termsafe keeps text that came from outside serve's own parts (a
// container's health-check output, a user's label or env value, a NATS
// user's actor) from acting on the terminal, log viewer or editor that
// shows it: no control character (C0 with ESC, DEL, C1 with CSI and OSC),
// no bidi control that reorders a line, no line or paragraph separator
// and no other invisible format character reaches it raw.
//
// Text escapes those characters for human output (lossy, readable);
// JSON and Writer escape them inside JSON documents as \uXXXX, which
// every JSON decoder reads back to the same value (lossless).
package termsafe
