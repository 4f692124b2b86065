package testenv

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/client"

	"github.com/turnstile-dev/turnstile/internal/imagebuild"
)

// AgentImageRepo is the repository of the locally built agent image; its
// tag is a hash of everything that goes into it.
const AgentImageRepo = "turnstile-agent"

// agentDockerfile is the test image: the static agent and nothing else. The
// health check uses the agent binary itself (there is no shell). Its start
// period keeps a slow start (AGENT_START_DELAY) from counting as unhealthy;
// the short interval makes a container healthy within a few hundred ms.
// It runs as nobody, and its /data belongs to nobody, so that a fresh
// workspace volume mounted there does too (Docker copies the image
// directory's owner to an empty volume), as in the image serve builds.
const agentDockerfile = `FROM scratch
COPY agent /agent
COPY --chown=65534:65534 data/ /data/
USER 65534:65534
EXPOSE 8080
HEALTHCHECK --interval=250ms --timeout=2s --start-period=120s --retries=3 CMD ["/agent", "healthcheck"]
ENTRYPOINT ["/agent"]
`

// Docker connects to the Docker Engine named by the environment
// (DOCKER_HOST etc.), negotiating the API version, and closes the client
// when the test ends. If the engine is unreachable it says so loudly and
// skips the test, or fails it when CI=true: CI must never skip Docker tests
// silently.
func Docker(tb testing.TB) *client.Client {
	tb.Helper()
	cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err = cli.Ping(ctx)
		cancel()
		if err != nil {
			_ = cli.Close()
		}
	}
	if err != nil {
		banner := strings.Repeat("!", 72)
		tb.Logf("\n%s\n!!! DOCKER IS UNREACHABLE: %v\n!!! %s needs a Docker Engine (set DOCKER_HOST or start dockerd).\n%s",
			banner, err, tb.Name(), banner)
		if os.Getenv("CI") == "true" {
			tb.Fatal("CI=true: Docker tests must not be skipped")
		}
		tb.Skip("Docker is unreachable")
	}
	tb.Cleanup(func() { _ = cli.Close() })
	return cli
}

// AgentImage returns the tag of the test image running internal/agent,
// building it if the engine does not have it yet. The tag is
// turnstile-agent:test-<hash of the agent's sources, the Dockerfile and the
// Go toolchain>, so a build happens once per change of the agent, not per
// test; concurrent builds of the same tag are harmless.
func AgentImage(tb testing.TB, cli client.APIClient) string {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	root, err := moduleRoot(ctx)
	if err != nil {
		tb.Fatalf("agent image: %v", err)
	}
	hash, err := agentHash(root)
	if err != nil {
		tb.Fatalf("agent image: %v", err)
	}
	tag := AgentImageRepo + ":test-" + hash
	if _, err := cli.ImageInspect(ctx, tag); err == nil {
		return tag
	} else if !cerrdefs.IsNotFound(err) {
		tb.Fatalf("agent image: inspect %s: %v", tag, err)
	}
	if err := buildAgentImage(ctx, cli, root, tag); err != nil {
		tb.Fatalf("agent image: %v", err)
	}
	tb.Logf("built %s", tag)
	return tag
}

func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return filepath.Join(runtime.GOROOT(), "bin", "go") //nolint:staticcheck // SA1019: the toolchain running the tests, for when PATH has no go
}

// moduleRoot finds the directory of the module the test runs in.
func moduleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, goTool(), "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("not inside a Go module")
	}
	return filepath.Dir(gomod), nil
}

// agentHash hashes what the image is made of: the agent's Go files, the
// Dockerfile and the toolchain. The agent uses only the standard library,
// so go.mod (which others change often) stays out.
func agentHash(root string) (string, error) {
	h := sha256.New()
	fmt.Fprintf(h, "%s %s/%s\n%s", runtime.Version(), runtime.GOOS, runtime.GOARCH, agentDockerfile)
	data := imagebuild.DataFiles()
	for _, name := range slices.Sorted(maps.Keys(data)) {
		fmt.Fprintf(h, "\n%s %d\n", name, len(data[name]))
		h.Write(data[name])
	}
	var files []string
	for _, dir := range []string{"cmd/agent", "internal/agent"} { // the agent binary's packages
		matches, err := filepath.Glob(filepath.Join(root, dir, "*.go"))
		if err != nil {
			return "", err
		}
		for _, m := range matches {
			if !strings.HasSuffix(m, "_test.go") {
				rel, _ := filepath.Rel(root, m)
				files = append(files, rel)
			}
		}
	}
	slices.Sort(files)
	for _, f := range files {
		b, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			return "", err
		}
		fmt.Fprintf(h, "\n%s %d\n", f, len(b))
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil))[:16], nil
}

func buildAgentImage(ctx context.Context, cli client.APIClient, root, tag string) error {
	dir, err := os.MkdirTemp("", "turnstile-agent-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "agent")
	cmd := exec.CommandContext(ctx, goTool(), "build", "-trimpath", "-buildvcs=false", "-ldflags=-s -w", "-o", bin, "./cmd/agent")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./cmd/agent: %w\n%s", err, out)
	}
	binary, err := os.ReadFile(bin)
	if err != nil {
		return err
	}
	files := imagebuild.DataFiles()
	files["agent"] = binary
	return buildImage(ctx, cli, tag, agentDockerfile, files)
}

// BuildImage builds an image from dockerfile and files (name to content,
// written executable) unless the engine already has it, and returns its
// tag: <repo>:test-<hash of dockerfile and files>. Use it for variants of
// the agent image: "FROM " + AgentImage(tb, cli) + a changed HEALTHCHECK or
// ENTRYPOINT.
func BuildImage(tb testing.TB, cli client.APIClient, repo, dockerfile string, files map[string][]byte) string {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	h := sha256.New()
	fmt.Fprintf(h, "%d\n%s", len(dockerfile), dockerfile)
	for _, name := range slices.Sorted(maps.Keys(files)) {
		fmt.Fprintf(h, "\n%s %d\n", name, len(files[name]))
		h.Write(files[name])
	}
	tag := repo + ":test-" + hex.EncodeToString(h.Sum(nil))[:16]
	if _, err := cli.ImageInspect(ctx, tag); err == nil {
		return tag
	} else if !cerrdefs.IsNotFound(err) {
		tb.Fatalf("image %s: %v", tag, err)
	}
	if err := buildImage(ctx, cli, tag, dockerfile, files); err != nil {
		tb.Fatalf("image %s: %v", tag, err)
	}
	return tag
}

// buildImage builds tag from a tar context holding the Dockerfile and files.
func buildImage(ctx context.Context, cli client.APIClient, tag, dockerfile string, files map[string][]byte) error {
	return imagebuild.Build(ctx, cli, tag, "turnstile test image", dockerfile, files)
}
