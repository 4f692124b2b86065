// Package testenv starts real infrastructure for tests: an embedded
// nats-server with JetStream file storage in a temp dir, and a throwaway
// PostgreSQL from the installed binaries. Everything it starts is stopped by
// t.Cleanup.
package testenv
