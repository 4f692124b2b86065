package main

import (
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/client"

	"github.com/turnstile-dev/turnstile/internal/imagebuild"
)

// agentImageRepo is the repository of the default workspace image; its tag
// is a hash of the binary inside and the Dockerfile, so each build of
// turnstile gets its own.
const agentImageRepo = "turnstile-agent"

// agentDockerfile runs `turnstile agent` from a FROM scratch image. The
// health check is the same binary (there is no shell). It runs as nobody
// (65534), and its /data belongs to nobody, so that a fresh workspace
// volume mounted there does too (Docker copies the image directory's owner
// to an empty volume) and the restricted profile's agent can write to it.
const agentDockerfile = `FROM scratch
COPY turnstile /turnstile
COPY --chown=65534:65534 data/ /data/
USER 65534:65534
EXPOSE 8080
HEALTHCHECK --interval=500ms --timeout=2s --start-period=120s --retries=3 CMD ["/turnstile", "agent", "healthcheck"]
ENTRYPOINT ["/turnstile", "agent"]
`

// ensureAgentImage returns the tag of the default workspace image, building
// it on the engine when missing. The image holds this very binary when it
// is statically linked; otherwise a static one built from the source tree
// around the working directory with CGO_ENABLED=0 (needs the Go toolchain).
// note says which.
func ensureAgentImage(ctx context.Context, cli client.APIClient, log *slog.Logger) (tag, note string, err error) {
	bin, note, err := staticBinary(ctx, log)
	if err != nil {
		return "", "", err
	}
	h := sha256.New() // the binary and how it is packed: either changing is a new image
	h.Write(bin)
	h.Write([]byte(agentDockerfile))
	data := imagebuild.DataFiles()
	for _, name := range slices.Sorted(maps.Keys(data)) {
		h.Write([]byte(name))
		h.Write(data[name])
	}
	tag = agentImageRepo + ":" + hex.EncodeToString(h.Sum(nil))[:16]
	if _, err := cli.ImageInspect(ctx, tag); err == nil {
		return tag, note + "; image already built", nil
	} else if !cerrdefs.IsNotFound(err) {
		return "", "", fmt.Errorf("inspect %s: %w", tag, err)
	}
	log.Info("building the default workspace image", "tag", tag, "from", note)
	if err := buildAgentImage(ctx, cli, bin, tag); err != nil {
		return "", "", err
	}
	return tag, note + "; image built now", nil
}

// staticBinary returns a statically linked turnstile binary: this
// executable if it is one, else one built from source.
func staticBinary(ctx context.Context, log *slog.Logger) ([]byte, string, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, "", fmt.Errorf("find this executable: %w", err)
	}
	static, err := isStatic(exe)
	if err != nil {
		return nil, "", err
	}
	if static {
		b, err := os.ReadFile(exe)
		return b, "this binary (statically linked)", err
	}
	root, err := sourceRoot()
	if err != nil {
		return nil, "", fmt.Errorf("this turnstile binary is dynamically linked, so it cannot run in a FROM scratch image, and %w: "+
			"build turnstile with CGO_ENABLED=0, or pass --default-image", err)
	}
	log.Info("this binary is dynamically linked: building a static one for the workspace image", "source", root)
	dir, err := os.MkdirTemp("", "turnstile-agent-build-")
	if err != nil {
		return nil, "", err
	}
	defer os.RemoveAll(dir)
	out := filepath.Join(dir, "turnstile")
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w", "-o", out, "./cmd/turnstile")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
	if b, err := cmd.CombinedOutput(); err != nil {
		return nil, "", fmt.Errorf("go build a static turnstile in %s: %w\n%s", root, err, b)
	}
	b, err := os.ReadFile(out)
	return b, "a static build (CGO_ENABLED=0) of the source in " + root, err
}

// isStatic reports whether the ELF file at path needs no dynamic loader.
func isStatic(path string) (bool, error) {
	f, err := elf.Open(path)
	if err != nil {
		return false, fmt.Errorf("read %s: %w", path, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			return false, nil
		}
	}
	return true, nil
}

// sourceRoot finds this module's source tree at or above the working
// directory.
func sourceRoot() (string, error) {
	module := "github.com/turnstile-dev/turnstile"
	if info, ok := debug.ReadBuildInfo(); ok && info.Main.Path != "" {
		module = info.Main.Path
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && strings.HasPrefix(strings.TrimSpace(string(b)), "module "+module) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no source tree of %s at or above the working directory", module)
		}
		dir = parent
	}
}

func buildAgentImage(ctx context.Context, cli client.APIClient, bin []byte, tag string) error {
	files := imagebuild.DataFiles()
	files["turnstile"] = bin
	return imagebuild.Build(ctx, cli, tag, "turnstile default workspace agent", agentDockerfile, files)
}
