package projector

import (
	"io"

	"github.com/schollz/progressbar/v3"
)

// ProgressBar returns a Rebuild progress callback that draws a bar on w
// (a terminal, usually os.Stderr).
func ProgressBar(w io.Writer) func(Progress) {
	var bar *progressbar.ProgressBar
	return func(p Progress) {
		if bar == nil {
			bar = progressbar.NewOptions64(int64(max(p.Total, 1)), progressbar.OptionSetWriter(w),
				progressbar.OptionSetDescription("rebuild: read"), progressbar.OptionShowCount(),
				progressbar.OptionShowIts(), progressbar.OptionSetItsString("msg"),
				progressbar.OptionThrottle(100e6), progressbar.OptionClearOnFinish())
		}
		bar.Describe("rebuild: " + p.Phase)
		_ = bar.Set64(int64(p.Done))
		if p.Phase == "done" {
			_ = bar.Finish()
		}
	}
}
