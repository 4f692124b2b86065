package main

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
)

// buildVersion describes this binary from its embedded build information.
type buildVersion struct {
	Version  string `json:"version"`
	Revision string `json:"revision,omitempty"`
	Time     string `json:"time,omitempty"`
	Modified bool   `json:"modified,omitempty"`
	Go       string `json:"go"`
	Platform string `json:"platform"`
}

func readVersion() buildVersion {
	v := buildVersion{Version: "(unknown)", Go: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return v
	}
	v.Version = info.Main.Version
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			v.Revision = s.Value
		case "vcs.time":
			v.Time = s.Value
		case "vcs.modified":
			v.Modified = s.Value == "true"
		}
	}
	return v
}

func (v buildVersion) String() string {
	s := "turnstile " + v.Version
	if v.Revision != "" {
		rev := v.Revision
		if len(rev) > 12 {
			rev = rev[:12]
		}
		s += " rev " + rev
		if v.Modified {
			s += " (modified)"
		}
	}
	return fmt.Sprintf("%s %s %s", s, v.Go, v.Platform)
}

func (a *app) versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version of this binary",
		Args:  exactArgs(),
		RunE: func(*cobra.Command, []string) error {
			v := readVersion()
			if a.structured() {
				return a.print(v)
			}
			fmt.Fprintln(a.out, v)
			return nil
		},
	}
}

// buildInfo is turnstile_build_info: always 1, its labels say which build
// serves (a dashboard joins on it to show versions across instances).
func buildInfo(v buildVersion) prometheus.Collector {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "turnstile_build_info",
		Help: "Always 1; the labels are this binary's version, VCS commit and Go version."}, []string{"version", "commit", "go_version"})
	commit := v.Revision
	if commit != "" && v.Modified {
		commit += "-modified"
	}
	g.WithLabelValues(v.Version, commit, v.Go).Set(1)
	return g
}
