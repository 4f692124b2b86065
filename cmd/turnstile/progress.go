package main

import (
	"io"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/turnstile-dev/turnstile/projector"
)

// newBar is the one look of the CLI's progress bars: counted in messages,
// redrawn at most ten times a second, cleared when finished.
func newBar(w io.Writer, desc string, total int64) *progressbar.ProgressBar {
	return progressbar.NewOptions64(max(total, 1), progressbar.OptionSetWriter(w),
		progressbar.OptionSetDescription(desc), progressbar.OptionShowCount(),
		progressbar.OptionShowIts(), progressbar.OptionSetItsString("msg"),
		progressbar.OptionThrottle(100*time.Millisecond), progressbar.OptionClearOnFinish())
}

// rebuildBar returns a Rebuild progress callback that draws a bar on w (a
// terminal). It lives here, not in projector, so that the projector does
// not depend on a terminal library.
func rebuildBar(w io.Writer) func(projector.Progress) {
	var bar *progressbar.ProgressBar
	return func(p projector.Progress) {
		if bar == nil {
			bar = newBar(w, "rebuild: read", int64(p.Total))
		}
		bar.Describe("rebuild: " + p.Phase)
		_ = bar.Set64(int64(p.Done))
		if p.Phase == "done" {
			_ = bar.Finish()
		}
	}
}
