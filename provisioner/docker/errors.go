package docker

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/pkg/stdcopy"

	"github.com/turnstile-dev/turnstile/provisioner"
)

// Docker's errors are classified by their errdefs kind (from the HTTP
// status), never by their text.
func isNotFound(err error) bool { return err != nil && cerrdefs.IsNotFound(err) }
func isConflict(err error) bool { return err != nil && cerrdefs.IsConflict(err) }
func isInvalid(err error) bool  { return err != nil && cerrdefs.IsInvalidArgument(err) }

// engineError wraps a failed engine call: CodeCanceled when ctx ended
// (whatever the client made of it), CodeEngine with Docker's own message
// otherwise.
func (p *Provisioner) engineError(ctx context.Context, op, workspace string, gen uint64, what string, err error) error {
	if ctx.Err() != nil {
		return provisioner.Canceled(op, workspace, gen, ctx.Err())
	}
	return &provisioner.Error{Op: op, Workspace: workspace, Generation: gen, Code: provisioner.CodeEngine,
		Reason: fmt.Sprintf("%s: %v", what, err), Err: err}
}

// Bounds of the container output in a failure reason.
const (
	tailLines = 5
	tailBytes = 600
	// maxSecretLines bounds the lines asked for beyond tailLines to hold
	// a multi-line secret whole; the Redactor replaces the lines of a
	// longer one each on its own.
	maxSecretLines = 256
)

// logTail returns the last lines a container wrote, for failure reasons.
// It is best effort: any error yields "".
func (p *Provisioner) logTail(ctx context.Context, id string, redact provisioner.Redactor) string {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	// Enough lines that a secret value reaching into the last tailLines
	// is there whole, for the Redactor to match.
	n := tailLines + min(redact.Newlines(), maxSecretLines)
	rc, err := p.cli.ContainerLogs(ctx, id, container.LogsOptions{ShowStdout: true, ShowStderr: true, Tail: strconv.Itoa(n)})
	if err != nil {
		return ""
	}
	defer rc.Close()
	var out bytes.Buffer
	if _, err := stdcopy.StdCopy(&out, &out, rc); err != nil && out.Len() == 0 {
		return ""
	}
	// Redacted before it is cut: a cut through a secret value would leave
	// a part of it that no longer matches.
	return lastOutput(redact.Redact(out.String()))
}

// lastOutput is the last tailLines lines of s, at most tailBytes of them,
// cut on a character boundary.
func lastOutput(s string) string {
	s = strings.TrimSpace(s)
	if lines := strings.Split(s, "\n"); len(lines) > tailLines {
		s = strings.Join(lines[len(lines)-tailLines:], "\n")
	}
	if len(s) > tailBytes {
		i := len(s) - tailBytes
		for i < len(s) && !utf8.RuneStart(s[i]) {
			i++
		}
		s = "…" + s[i:]
	}
	return s
}
