// Package imagebuild builds a container image on the local Docker engine
// from a Dockerfile and a few files, with no registry: the way serve builds
// the default workspace image and the tests build theirs.
package imagebuild

import (
	"archive/tar"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/docker/docker/api/types/build"
	"github.com/docker/docker/client"
)

// Build builds tag from dockerfile and files (name → content; files at the
// top are executable, those in a directory not; a name ending in "/" is a
// directory, for a COPY
// --chown that makes a directory owned by the image's user). The context is
// deterministic (sorted names, zero times), so the same input yields the
// same layers.
func Build(ctx context.Context, cli client.APIClient, tag, title, dockerfile string, files map[string][]byte) error {
	var tarball bytes.Buffer
	tw := tar.NewWriter(&tarball)
	all := maps.Clone(files)
	if all == nil {
		all = map[string][]byte{}
	}
	all["Dockerfile"] = []byte(dockerfile)
	for _, name := range slices.Sorted(maps.Keys(all)) {
		hdr := &tar.Header{Name: name, Mode: 0o755, Size: int64(len(all[name])), ModTime: time.Unix(0, 0)}
		switch {
		case name == "Dockerfile":
			hdr.Mode = 0o644
		case strings.HasSuffix(name, "/"):
			hdr.Typeflag, hdr.Size = tar.TypeDir, 0
		case strings.Contains(name, "/"):
			hdr.Mode = 0o644
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("build %s: %w", tag, err)
		}
		if _, err := tw.Write(all[name]); err != nil {
			return fmt.Errorf("build %s: %w", tag, err)
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("build %s: %w", tag, err)
	}
	resp, err := cli.ImageBuild(ctx, &tarball, build.ImageBuildOptions{
		Tags: []string{tag}, Remove: true, ForceRemove: true, Version: build.BuilderV1,
		Labels: map[string]string{"org.opencontainers.image.title": title},
	})
	if err != nil {
		return fmt.Errorf("build %s: %w", tag, err)
	}
	defer resp.Body.Close()
	return readBuildStream(resp.Body, tag)
}

// readBuildStream drains a build's JSON progress and returns its error,
// with the build's output so far.
func readBuildStream(r io.Reader, tag string) error {
	dec := json.NewDecoder(r)
	var log strings.Builder
	for {
		var m struct {
			Stream      string `json:"stream"`
			Error       string `json:"error"`
			ErrorDetail struct {
				Message string `json:"message"`
			} `json:"errorDetail"`
		}
		if err := dec.Decode(&m); errors.Is(err, io.EOF) {
			return nil
		} else if err != nil {
			return fmt.Errorf("build %s: reading progress: %w", tag, err)
		}
		log.WriteString(m.Stream)
		if msg := cmp.Or(m.ErrorDetail.Message, m.Error); msg != "" {
			return fmt.Errorf("build %s: %s\n%s", tag, msg, log.String())
		}
	}
}

// DataFiles are the build-context entries of a workspace image's /data: a
// directory and one small file, for
//
//	COPY --chown=<uid>:<gid> data/ /data/
//
// which makes /data the image user's. Docker gives a new, empty volume
// mounted there the owner of that directory (and a copy of its files). The
// file keeps the volume from being empty afterwards: Docker copies into an
// empty volume at every container create, touching it each time.
func DataFiles() map[string][]byte {
	return map[string][]byte{
		"data/": nil,
		"data/.turnstile-volume": []byte("This is a Turnstile workspace volume, mounted at /data. " +
			"This file came from the image; it keeps the volume non-empty, so that Docker sets its owner once.\n"),
	}
}
