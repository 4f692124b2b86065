package testenv_test

import (
	"context"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/turnstile-dev/turnstile/internal/testenv"
)

func TestAgentImage(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	cli := testenv.Docker(t)
	tag := testenv.AgentImage(t, cli)
	if again := testenv.AgentImage(t, cli); again != tag {
		t.Fatalf("second call: %s, want the cached %s", again, tag)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	img, err := cli.ImageInspect(ctx, tag)
	if err != nil {
		t.Fatal(err)
	}
	hc := img.Config.Healthcheck
	if hc == nil || len(hc.Test) < 2 || hc.Test[1] != "/agent" {
		t.Fatalf("health check %+v, want one running /agent healthcheck", hc)
	}
	if img.Os != "linux" || len(img.Config.Entrypoint) != 1 || img.Config.Entrypoint[0] != "/agent" {
		t.Fatalf("image %s: os %s, entrypoint %v", tag, img.Os, img.Config.Entrypoint)
	}
	_ = cli.Close() // before goleak looks for its connections
}
