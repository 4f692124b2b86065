// Package layering holds one test: that the imports between this module's
// packages, and the use of the JetStream client, follow the layering table
// in docs/architecture.md ("Layering"). It has no code; a new package gets
// a row in that table or the test fails naming it.
package layering
