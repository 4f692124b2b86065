package docker

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/distribution/reference"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/mount"
	"github.com/docker/docker/api/types/volume"

	"github.com/turnstile-dev/turnstile/internal/retry"
	"github.com/turnstile-dev/turnstile/provisioner"
)

// maxRounds bounds how often Provision replaces a container it found under
// the workspace's name (an older generation's, or one being removed) and
// finds yet another there: more than a few means something else keeps
// recreating the name. Rounds that find the name free but cannot take it
// (a create or removal of that name still in flight in the engine) are not
// rounds: Provision keeps looking at them, with growing pauses, for as long
// as its context lasts.
const maxRounds = 5

// errCreateUnsure marks a create whose outcome is unknown: the call timed
// out, but the engine may still complete it.
var errCreateUnsure = errors.New("the create timed out; the engine may still complete it")

// Provision makes the workspace's container run req.Spec at req.Generation;
// see provisioner.Provisioner.
func (p *Provisioner) Provision(ctx context.Context, req provisioner.Request) (provisioner.Result, error) {
	const op = "provision"
	if err := provisioner.Validate(op, req.Workspace, req.Generation); err != nil {
		return provisioner.Result{}, err
	}
	plan, err := p.cfg.Policy.Plan(op, req, p.cfg.DefaultImage)
	if err != nil {
		return provisioner.Result{}, err
	}
	a := &attempt{p: p, req: req, plan: plan, image: plan.Image,
		log: p.log.With("workspace", req.Workspace, "generation", req.Generation)}
	res, err := a.run(ctx)
	if err != nil && ctx.Err() != nil {
		a.abandon(ctx)
		return provisioner.Result{}, provisioner.Canceled(op, req.Workspace, req.Generation, ctx.Err())
	}
	return res, err
}

// attempt is one Provision call.
type attempt struct {
	p     *Provisioner
	req   provisioner.Request
	plan  provisioner.Plan
	image string
	// user is the user the container runs as; "" is the image's own.
	user string
	// imageVolumes are the paths the image declares VOLUME at, cleaned.
	imageVolumes []string
	log          *slog.Logger
}

func (a *attempt) name() string { return provisioner.ContainerName(a.req.Workspace) }

func (a *attempt) fail(code provisioner.Code, reason string, err error) error {
	return &provisioner.Error{Op: "provision", Workspace: a.req.Workspace, Generation: a.req.Generation, Code: code, Reason: reason, Err: err}
}

func (a *attempt) engine(ctx context.Context, what string, err error) error {
	return a.p.engineError(ctx, "provision", a.req.Workspace, a.req.Generation, what, err)
}

func (a *attempt) run(ctx context.Context) (provisioner.Result, error) {
	cli := a.p.cli
	// Fail on a missing image before anything is touched.
	img, err := cli.ImageInspect(ctx, a.image)
	if err != nil {
		if isNotFound(err) {
			return provisioner.Result{}, provisioner.ImageNotFound("provision", a.req.Workspace, a.req.Generation, a.image, err)
		}
		return provisioner.Result{}, a.engine(ctx, "inspect image "+a.image, err)
	}
	if a.image != a.p.cfg.DefaultImage && !knownAs(img, a.image) {
		// The engine falls back to reading a name as an image id prefix:
		// an allowed pattern must not let a spec run any local image that
		// way.
		return provisioner.Result{}, a.fail(provisioner.CodeNotAllowed, fmt.Sprintf(
			"image %s is not a name of the image it finds (%s): name images by repository:tag or @digest", a.image, img.ID), nil)
	}
	if a.plan.Profile.NonRoot && (img.Config == nil || provisioner.IsRootUser(img.Config.User)) {
		a.user = provisioner.NonRootUser
	}
	if img.Config != nil {
		for v := range img.Config.Volumes {
			a.imageVolumes = append(a.imageVolumes, path.Clean(v))
		}
		slices.Sort(a.imageVolumes)
	}
	replaced, waits := 0, 0
	for {
		c, err := cli.ContainerInspect(ctx, a.name())
		if isNotFound(err) {
			id, err := a.create(ctx)
			switch {
			case err == nil:
				return a.start(ctx, id, false)
			case isConflict(err):
				// The name is reserved although inspect found nothing: a
				// create (perhaps this attempt's own, timed out) or a removal
				// of that name is still in flight in the engine.
				level := slog.LevelWarn
				if waits > 0 {
					level = slog.LevelDebug // said once per wait is enough
				}
				a.log.Log(ctx, level, "container name taken while creating; looking again", "container", a.name(), "looks", waits+1)
			case errors.Is(err, errCreateUnsure):
				a.log.Warn("create timed out; looking for the container it may still make", "container", a.name(), "err", err)
			default:
				return provisioner.Result{}, err
			}
			if err := a.pause(ctx, waits); err != nil {
				return provisioner.Result{}, err
			}
			waits++
			continue
		}
		if err != nil {
			return provisioner.Result{}, a.engine(ctx, "inspect container "+a.name(), err)
		}
		waits = 0
		if owner := ownerOf(c); owner != a.p.cfg.Installation {
			return provisioner.Result{}, provisioner.NameTaken("provision", a.req.Workspace, a.req.Generation, "container", a.name(), owner)
		}
		gen := generationOf(c.Config.Labels)
		switch {
		case gen > a.req.Generation:
			return provisioner.Result{}, provisioner.Superseded("provision", a.req.Workspace, a.req.Generation, gen)
		case gen < a.req.Generation || c.State.Dead || c.State.Status == container.StateRemoving:
			if replaced == maxRounds {
				return provisioner.Result{}, a.fail(provisioner.CodeEngine,
					fmt.Sprintf("container name %s kept changing hands: %d containers replaced and yet another there (generation %d): is something else creating it?",
						a.name(), replaced, gen), nil)
			}
			replaced++
			a.log.Info("replacing container of an older generation", "container", c.ID, "old_generation", gen)
			if err := a.p.removeContainer(ctx, c.ID); err != nil {
				return provisioner.Result{}, a.engine(ctx, fmt.Sprintf("remove container %s of generation %d", a.name(), gen), err)
			}
		default:
			// This generation's: made by an earlier attempt, or by this
			// one's create that timed out.
			return a.start(ctx, c.ID, true)
		}
	}
}

// pause waits before the next look at a name that is reserved but not
// (yet) inspectable: PollInterval doubled per earlier wait, up to
// 10×PollInterval, or until ctx ends. Such a wait can last as long as a
// create or removal in flight in an overloaded engine (tens of seconds), so
// it is bounded only by ctx (the provisioning deadline, which cancels it).
func (a *attempt) pause(ctx context.Context, waits int) error {
	d := retry.Backoff(waits, a.p.cfg.PollInterval, 10*a.p.cfg.PollInterval)
	if err := retry.Sleep(ctx, d); err != nil {
		return provisioner.Canceled("provision", a.req.Workspace, a.req.Generation, err)
	}
	return nil
}

// labels are the container's labels: the spec's under LabelUserPrefix
// (the plan has them so), then Turnstile's own, which nothing shadows.
func (a *attempt) labels() map[string]string {
	l := maps.Clone(a.plan.Labels)
	if l == nil {
		l = map[string]string{}
	}
	l[provisioner.LabelWorkspace] = a.req.Workspace
	l[provisioner.LabelGeneration] = strconv.FormatUint(a.req.Generation, 10)
	l[provisioner.LabelInstallation] = a.p.cfg.Installation
	l[provisioner.LabelProfile] = a.plan.Profile.Name
	return l
}

// detached returns a context for a create call that must not be cut short
// by ctx: a create the client gives up on may still complete in the
// daemon, after abandon (or the next action) looked and found nothing,
// leaving a container or volume behind that nobody removes. Waiting for
// the create (normally short) means whatever it made is there for abandon
// and the next action to see. It is bounded by CleanupTimeout all the
// same; an overloaded engine can outlast that, and such a create's outcome
// is unknown (see errCreateUnsure).
func (a *attempt) detached(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), a.p.cfg.CleanupTimeout)
}

// volumeLabels are the labels of the workspace's volume.
func (a *attempt) volumeLabels() map[string]string {
	return map[string]string{
		provisioner.LabelWorkspace:    a.req.Workspace,
		provisioner.LabelInstallation: a.p.cfg.Installation,
	}
}

// ensureVolume creates the workspace's volume, or checks that the existing
// one is this installation's.
func (a *attempt) ensureVolume(ctx context.Context) error {
	name := provisioner.VolumeName(a.req.Workspace)
	v, err := a.p.cli.VolumeInspect(ctx, name)
	if isNotFound(err) {
		cctx, cancel := a.detached(ctx)
		v, err = a.p.cli.VolumeCreate(cctx, volume.CreateOptions{Name: name, Labels: a.volumeLabels()})
		cancel()
		if err == nil {
			a.log.Info("created volume", "volume", name)
		}
	}
	if err != nil {
		return a.engine(ctx, "volume "+name, err)
	}
	if owner := v.Labels[provisioner.LabelInstallation]; owner != a.p.cfg.Installation {
		return provisioner.NameTaken("provision", a.req.Workspace, a.req.Generation, "volume", name, owner)
	}
	return nil
}

// create makes the container (not started). A conflict error is returned
// as is, for the caller to look again.
func (a *attempt) create(ctx context.Context) (string, error) {
	if err := a.ensureVolume(ctx); err != nil {
		return "", err
	}
	spec := a.req.Spec
	env := make([]string, 0, len(spec.Env))
	for _, k := range slices.Sorted(maps.Keys(spec.Env)) {
		env = append(env, k+"="+spec.Env[k])
	}
	cfg := &container.Config{
		Image:    a.image,
		Env:      env,
		Labels:   a.labels(),
		Hostname: a.req.Workspace, // a DNS label; ws-<id> can exceed 63 characters
		User:     a.user,
	}
	host := a.hostConfig()
	cctx, cancel := a.detached(ctx)
	defer cancel()
	resp, err := a.p.cli.ContainerCreate(cctx, cfg, host, nil, nil, a.name())
	switch {
	case err == nil:
		a.log.Info("created container", "container", resp.ID, "image", a.image, "profile", a.plan.Profile.Name, "user", cmp.Or(a.user, "(image's)"))
		return resp.ID, nil
	case isConflict(err):
		return "", err
	case ctx.Err() == nil && (cctx.Err() != nil || errors.Is(err, context.DeadlineExceeded)):
		// The client gave up; the engine may not have. The caller looks
		// for the container until it appears (and adopts it) or the name
		// is free.
		return "", fmt.Errorf("create container %s: %w: %w", a.name(), errCreateUnsure, err)
	case isNotFound(err):
		// The image was there a moment ago; say so if it is gone now.
		if _, ierr := a.p.cli.ImageInspect(ctx, a.image); isNotFound(ierr) {
			return "", provisioner.ImageNotFound("provision", a.req.Workspace, a.req.Generation, a.image, err)
		}
		return "", a.engine(ctx, "create container "+a.name(), err)
	case isInvalid(err) && ctx.Err() == nil:
		return "", a.fail(provisioner.CodeInvalid, fmt.Sprintf("Docker refused the spec: %v", err), err)
	default:
		return "", a.engine(ctx, "create container "+a.name(), err)
	}
}

// hostConfig is the container's confinement: the plan's profile and
// limits, the workspace's volume, no restart policy.
func (a *attempt) hostConfig() *container.HostConfig {
	plan, prof := a.plan, a.plan.Profile
	host := &container.HostConfig{
		Mounts: []mount.Mount{{
			Type: mount.TypeVolume, Source: provisioner.VolumeName(a.req.Workspace), Target: provisioner.DataPath,
			// Should the volume vanish between ensureVolume and here (a
			// reconciler removing a deleted workspace's leftover volume just
			// as the id is created again), Docker creates it anew: with
			// these labels it is still this installation's.
			VolumeOptions: &mount.VolumeOptions{Labels: a.volumeLabels()},
		}},
		RestartPolicy: container.RestartPolicy{Name: container.RestartPolicyDisabled},
		// Every profile starts from no capabilities and adds back its own.
		CapDrop:        []string{"ALL"},
		CapAdd:         slices.Clone(prof.CapAdd),
		ReadonlyRootfs: prof.ReadOnlyRootfs,
		Resources: container.Resources{
			NanoCPUs: plan.NanoCPUs(), // the value the policy judged
			Memory:   plan.MemoryBytes,
		},
	}
	if plan.MemoryBytes > 0 {
		host.MemorySwap = plan.MemoryBytes // the limit is the limit: no swap beyond it
	}
	if plan.PidsLimit > 0 {
		host.PidsLimit = &plan.PidsLimit
	}
	if prof.NoNewPrivileges {
		host.SecurityOpt = []string{"no-new-privileges:true"}
	}
	if prof.ReadOnlyRootfs {
		tmpfs := fmt.Sprintf("rw,noexec,nosuid,nodev,size=%d,mode=1777", plan.TmpBytes)
		host.Tmpfs = map[string]string{provisioner.TmpPath: tmpfs}
		// Each path the image declares a VOLUME at would get an anonymous
		// volume: disk, unbounded, writable outside /data and /tmp. A tmpfs
		// like /tmp covers it instead (Docker then makes no volume): bounded
		// by the memory limit, gone with the container. /data is the
		// workspace's volume already.
		for _, v := range a.imageVolumes {
			if v != provisioner.DataPath {
				host.Tmpfs[v] = tmpfs
			}
		}
	}
	return host
}

// knownAs reports whether ref is one of img's names (a tag or a digest),
// rather than a prefix of its id that the engine fell back to.
func knownAs(img image.InspectResponse, ref string) bool {
	named, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		return false
	}
	same := func(names []string, want string) bool {
		return slices.ContainsFunc(names, func(n string) bool {
			nn, err := reference.ParseNormalizedNamed(n)
			return err == nil && reference.TagNameOnly(nn).String() == want
		})
	}
	if c, ok := named.(reference.Canonical); ok {
		return same(img.RepoDigests, reference.TrimNamed(c).String()+"@"+c.Digest().String())
	}
	return same(img.RepoTags, reference.TagNameOnly(named).String())
}

// start starts container id unless it runs, then waits until it is ready.
// A container this attempt just created is known not to run; an adopted
// one is looked at first.
func (a *attempt) start(ctx context.Context, id string, adopted bool) (provisioner.Result, error) {
	cli := a.p.cli
	var running, paused bool
	if adopted {
		c, err := cli.ContainerInspect(ctx, id)
		if err != nil {
			return provisioner.Result{}, a.engine(ctx, "inspect container "+a.name(), err)
		}
		running, paused = c.State.Running, c.State.Paused
	}
	switch {
	case paused:
		if err := cli.ContainerUnpause(ctx, id); err != nil {
			return provisioner.Result{}, a.engine(ctx, "unpause container "+a.name(), err)
		}
	case !running:
		if err := cli.ContainerStart(ctx, id, container.StartOptions{}); err != nil {
			if ctx.Err() != nil {
				return provisioner.Result{}, a.engine(ctx, "start", err)
			}
			code, reason := provisioner.CodeEngine, fmt.Sprintf("start container %s: %v", a.name(), err)
			if isInvalid(err) {
				// e.g. the image's entrypoint does not exist: no retry helps.
				code, reason = provisioner.CodeInvalid, fmt.Sprintf("Docker cannot start image %s: %v", a.image, err)
			}
			if !adopted {
				// It never ran: nothing to debug in it, so do not leave it behind.
				if rerr := a.p.removeDetached(ctx, id); rerr != nil {
					a.log.Warn("could not remove the container that failed to start", "container", id, "err", rerr)
				}
			}
			return provisioner.Result{}, a.fail(code, reason, err)
		}
		a.log.Info("started container", "container", id, "adopted", adopted)
	}
	if err := a.waitReady(ctx, id); err != nil {
		return provisioner.Result{}, err
	}
	return provisioner.Result{ContainerID: id, Image: a.image, Adopted: adopted}, nil
}

// waitReady waits until the container runs and, if it has a health check,
// is healthy. It looks at the container again whenever the engine reports a
// change of its health, its exit or its removal, and every ReadyPoll in
// case an event was missed (the event stream may connect a moment after the
// first look, or break). Waking on events rather than polling every
// container at a short interval keeps the engine free for the starts
// themselves when many workspaces start at once.
func (a *attempt) waitReady(ctx context.Context, id string) error {
	ectx, stopEvents := context.WithCancel(ctx)
	defer stopEvents()
	changes, broken := a.p.cli.Events(ectx, events.ListOptions{Filters: filters.NewArgs(
		filters.Arg("type", string(events.ContainerEventType)),
		filters.Arg("container", id),
		filters.Arg("event", "health_status"), // matches health_status: healthy, unhealthy, ...
		filters.Arg("event", string(events.ActionDie)),
		filters.Arg("event", string(events.ActionDestroy)),
	)})
	t := time.NewTicker(a.p.cfg.ReadyPoll)
	defer t.Stop()
	for {
		c, err := a.p.cli.ContainerInspect(ctx, id)
		if isNotFound(err) && ctx.Err() == nil {
			return a.fail(provisioner.CodeEngine, fmt.Sprintf("container %s vanished while starting: was it removed by someone else?", a.name()), err)
		}
		if err != nil {
			return a.engine(ctx, "inspect container "+a.name(), err)
		}
		st := c.State
		switch {
		case st.Running && !st.Paused && (st.Health == nil || st.Health.Status == container.Healthy):
			return nil
		case st.Running && st.Health != nil && st.Health.Status == container.Unhealthy:
			reason := fmt.Sprintf("container %s is unhealthy", a.name())
			if n := len(st.Health.Log); n > 0 {
				if out := strings.TrimSpace(a.req.Redact.Redact(st.Health.Log[n-1].Output)); out != "" {
					reason += ": last health check said: " + out
				}
			}
			return a.fail(provisioner.CodeUnhealthy, reason, nil)
		case !st.Running && (st.Status == container.StateExited || st.Status == container.StateDead):
			reason := fmt.Sprintf("container %s exited with code %d before it was ready", a.name(), st.ExitCode)
			if st.OOMKilled {
				reason += " (out of memory)"
			}
			if st.Error != "" {
				reason += ": " + a.req.Redact.Redact(st.Error)
			}
			if tail := a.p.logTail(ctx, id, a.req.Redact); tail != "" {
				reason += "; last output: " + tail
			}
			return a.fail(provisioner.CodeExited, reason, nil)
		}
		select {
		case <-ctx.Done():
			return provisioner.Canceled("provision", a.req.Workspace, a.req.Generation, ctx.Err())
		case <-changes:
		case err := <-broken:
			if ctx.Err() == nil {
				a.log.Debug("container event stream broke; polling alone", "err", err)
			}
			changes, broken = nil, nil // a nil channel never fires: the ticker remains
		case <-t.C:
		}
	}
}

// abandon removes the container of this attempt's generation after ctx
// ended, so that nothing a cancelled Provision created or started keeps
// running. Docker serialises operations on one container, so a start still
// in flight in the daemon finishes before this removal. Creates are
// normally not in flight here: they run to their end whatever ctx says (see
// detached). One that outlasted CleanupTimeout may be; a container it makes
// later is of this, abandoned, generation, never started, and the next
// provision of the workspace replaces it as an older generation's.
func (a *attempt) abandon(ctx context.Context) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.p.cfg.CleanupTimeout)
	defer cancel()
	c, err := a.p.cli.ContainerInspect(ctx, a.name())
	if err != nil {
		if !isNotFound(err) {
			a.log.Warn("abandoned provision: could not inspect the container", "container", a.name(), "err", err)
		}
		return
	}
	if ownerOf(c) != a.p.cfg.Installation || generationOf(c.Config.Labels) != a.req.Generation {
		return
	}
	if err := a.p.forceRemove(ctx, c.ID); err != nil {
		a.log.Warn("abandoned provision: could not remove its container", "container", c.ID, "err", err)
		return
	}
	a.log.Info("abandoned provision: removed its container", "container", c.ID)
}
