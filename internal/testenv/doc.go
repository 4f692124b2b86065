// Package testenv starts real infrastructure for tests: an embedded
// nats-server with JetStream file storage in a temp dir, Turnstile's streams
// and engines on it, a throwaway PostgreSQL from the installed binaries, and
// a client of the local Docker engine with the workspace agent's image built
// on it. Everything it starts is stopped by t.Cleanup; Docker tests skip
// loudly when no engine is reachable, and fail instead under CI=true.
package testenv
