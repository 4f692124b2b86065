// Package secrets keeps the values behind secret://NAME env references and
// resolves a spec's references into the values a container gets.
//
// Guarantees:
//   - A value never leaves this package except as the resolved spec that
//     Resolve returns for the provisioner; errors, List and logs carry names,
//     sizes and short digests, never a value.
//   - Store keeps one file per secret in its directory: the directory is
//     0700 and every file 0600, written atomically (a temporary file, fsync,
//     rename), so a reader sees the old value or the new one, never a part.
//   - Resolve reads every source afresh on each call: a secret set again is
//     used by the next provisioning attempt, and a secret removed does not
//     touch a container already running.
package secrets
