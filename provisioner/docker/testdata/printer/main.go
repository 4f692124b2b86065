// Command printer dies quoting its config, as programs do: it writes a
// line, then $KEY as it is, and exits 1. TestFailureReasons runs it with a
// multi-line secret in KEY.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "fatal: cannot use key:")
	fmt.Fprintln(os.Stderr, os.Getenv("KEY"))
	os.Exit(1)
}
