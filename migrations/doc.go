// Package migrations is the read model's SQL schema, embedded in the binary
// and applied with goose (github.com/pressly/goose/v3).
//
// Guarantees:
//   - Up is idempotent and safe to run from several processes at once: a
//     PostgreSQL advisory lock serializes them.
//   - Each migration runs in its own transaction: it applies completely or
//     not at all.
//   - Tables are created in the first schema of the connection's
//     search_path, so the projector's rebuild can build a fresh copy of the
//     read model beside the live one from the very same files.
package migrations
