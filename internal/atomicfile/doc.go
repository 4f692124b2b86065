// Package atomicfile replaces a file's contents at once: a reader sees the
// old file or the new one, never a part, the new one is never readable more
// widely than asked (an existing file's looser mode is not kept, as
// os.WriteFile would keep it), and it is on disk (file and directory
// synced) when Write returns. Serve's credential files (tokens, database
// URLs, passwords) and the secrets store all write through it.
package atomicfile
