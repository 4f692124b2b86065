// Package textcut cuts text to a length in bytes without splitting a
// UTF-8 character: the one cut of every bound on quoted input, log lines
// and failure reasons.
package textcut
