package provisioner

import (
	"errors"
	"fmt"
	"math"
	"path"
	"slices"
	"strings"

	"github.com/distribution/reference"

	"github.com/turnstile-dev/turnstile/fsm"
)

// Labels of a workspace's container besides the three of the contract.
const (
	// LabelUserPrefix prefixes every label of a spec on the container:
	// spec label team=infra is turnstile.label.team=infra, so no spec can
	// set or shadow turnstile.workspace, .generation or .installation.
	LabelUserPrefix = "turnstile.label."
	// LabelProfile names the security profile the container runs with.
	LabelProfile = "turnstile.profile"
)

// Policy defaults, used where a Policy field is zero.
const (
	DefaultMemoryBytes = 512 << 20
	DefaultCPUs        = 1.0
	DefaultPidsLimit   = 512
	DefaultTmpBytes    = 64 << 20
)

// Policy is what the operator lets a spec ask for, and the limits a spec
// gets when it asks for none. Backends apply it in Provision (the trusted
// side: whatever published the command, the policy holds). The zero Policy
// is the strict default: the default image only, the restricted profile
// only, 512 MiB, 1 CPU, 512 processes, a 64 MiB /tmp, no maximum.
type Policy struct {
	// AllowedImages are patterns (path.Match: '*' matches within one path
	// segment, never across '/') of the images a spec may name besides the
	// default image, which is always allowed. A pattern is matched against
	// the reference as the spec writes it and in its short and full forms
	// (alpine:3, docker.io/library/alpine:3).
	AllowedImages []string
	// AllowedProfiles are the profiles a spec may name (default: just
	// DefaultProfile). A profile stricter than DefaultProfile is always
	// allowed: asking for less is never refused.
	AllowedProfiles []string
	// DefaultProfile is the profile of a spec that names none (default
	// restricted); it must be allowed.
	DefaultProfile string
	// DefaultMemoryBytes and DefaultCPUs limit a spec that sets no memory
	// or CPU limit; negative means no limit.
	DefaultMemoryBytes int64
	DefaultCPUs        float64
	// MaxMemoryBytes and MaxCPUs, when positive, are the most a spec may
	// ask for; 0 is no maximum here, but serve sets both unless told 0
	// (--max-memory 4g, --max-cpus the host's CPUs): its callers are not
	// trusted.
	MaxMemoryBytes int64
	MaxCPUs        float64
	// PidsLimit caps the processes (threads included) of a container;
	// negative means no limit.
	PidsLimit int64
	// TmpBytes is the size of the tmpfs at TmpPath of a profile with a
	// read-only root filesystem (it counts against the memory limit).
	TmpBytes int64
}

// withDefaults fills zero fields.
func (p Policy) withDefaults() Policy {
	if p.DefaultProfile == "" {
		p.DefaultProfile = ProfileRestricted
	}
	if len(p.AllowedProfiles) == 0 {
		p.AllowedProfiles = []string{p.DefaultProfile}
	}
	if p.DefaultMemoryBytes == 0 {
		p.DefaultMemoryBytes = DefaultMemoryBytes
	}
	if p.DefaultCPUs == 0 {
		p.DefaultCPUs = DefaultCPUs
	}
	if p.PidsLimit == 0 {
		p.PidsLimit = DefaultPidsLimit
	}
	if p.TmpBytes <= 0 {
		p.TmpBytes = DefaultTmpBytes
	}
	return p
}

// Validate reports what is wrong with p: a bad pattern, an unknown
// profile, a default the maximum refuses.
func (p Policy) Validate() error {
	var errs []error
	for _, pat := range p.AllowedImages {
		if _, err := path.Match(pat, ""); err != nil || strings.TrimSpace(pat) == "" {
			errs = append(errs, fmt.Errorf("allowed image pattern %q is not a pattern (path.Match syntax: *, ?, [a-z])", pat))
		}
	}
	p = p.withDefaults()
	for _, name := range append([]string{p.DefaultProfile}, p.AllowedProfiles...) {
		if _, ok := LookupProfile(name); !ok {
			errs = append(errs, fmt.Errorf("profile %q does not exist: use %s", name, strings.Join(ProfileNames(), " or ")))
		}
	}
	if !slices.Contains(p.AllowedProfiles, p.DefaultProfile) {
		errs = append(errs, fmt.Errorf("default profile %s is not among the allowed profiles (%s)", p.DefaultProfile, strings.Join(p.AllowedProfiles, ", ")))
	}
	if p.DefaultMemoryBytes > 0 && p.DefaultMemoryBytes < fsm.MinMemoryBytes {
		errs = append(errs, fmt.Errorf("default memory %d bytes is below Docker's minimum of %d", p.DefaultMemoryBytes, fsm.MinMemoryBytes))
	}
	if p.DefaultCPUs > 0 && nanoCPUs(p.DefaultCPUs) < minNanoCPUs || p.MaxCPUs > 0 && nanoCPUs(p.MaxCPUs) < minNanoCPUs {
		errs = append(errs, fmt.Errorf("default CPUs %v, maximum CPUs %v: a CPU limit below %v is no limit at all in Docker; use at least %v",
			p.DefaultCPUs, p.MaxCPUs, fsm.MinCPUs, fsm.MinCPUs))
	}
	if p.MaxMemoryBytes < 0 || p.MaxCPUs < 0 || !(p.DefaultCPUs <= fsm.MaxCPUs) || !(p.MaxCPUs <= fsm.MaxCPUs) {
		errs = append(errs, fmt.Errorf("maximum memory %d and CPUs %v, default CPUs %v: use 0 (none) or positive numbers, CPUs at most %d",
			p.MaxMemoryBytes, p.MaxCPUs, p.DefaultCPUs, fsm.MaxCPUs))
	}
	if p.MaxMemoryBytes > 0 && (p.DefaultMemoryBytes < 0 || p.DefaultMemoryBytes > p.MaxMemoryBytes) {
		errs = append(errs, fmt.Errorf("default memory must be a limit within the maximum memory %s", formatBytes(p.MaxMemoryBytes)))
	}
	if p.MaxCPUs > 0 && (p.DefaultCPUs < 0 || p.DefaultCPUs > p.MaxCPUs) {
		errs = append(errs, fmt.Errorf("default CPUs must be a limit within the maximum CPUs %v", p.MaxCPUs))
	}
	return errors.Join(errs...)
}

// Plan is what Provision runs once the policy has judged a spec.
type Plan struct {
	// Image is the spec's image, or the default.
	Image string
	// Profile is the spec's profile, or the default.
	Profile Profile
	// CPUs and MemoryBytes are the spec's limits, or the defaults; 0 is no
	// limit.
	CPUs        float64
	MemoryBytes int64
	// PidsLimit is the process limit; 0 is none.
	PidsLimit int64
	// TmpBytes is the size of the tmpfs at TmpPath, when the profile has a
	// read-only root filesystem.
	TmpBytes int64
	// Labels are the spec's labels, each key under LabelUserPrefix.
	Labels map[string]string
}

// minNanoCPUs is fsm.MinCPUs in the unit Docker takes.
const minNanoCPUs = 1e7

// nanoCPUs is cpus in the unit Docker takes (HostConfig.NanoCPUs).
func nanoCPUs(cpus float64) int64 { return int64(math.Round(cpus * 1e9)) }

// NanoCPUs is the CPU limit in the unit Docker takes; 0 is no limit. Plan
// judges this value, not CPUs: what is sent is what was checked.
func (p Plan) NanoCPUs() int64 { return nanoCPUs(p.CPUs) }

// Plan judges req.Spec: the spec itself (fsm.ValidateSpec), its image
// against AllowedImages (defaultImage is always allowed and runs when the
// spec names none), its profile against AllowedProfiles, its limits
// against the maximums. Failures are *Error: CodeInvalid for a malformed
// spec, an unknown profile or no image at all, CodeNotAllowed for what the
// policy refuses, each with a reason naming what to change.
func (p Policy) Plan(op string, req Request, defaultImage string) (Plan, error) {
	fail := func(code Code, format string, args ...any) error {
		return &Error{Op: op, Workspace: req.Workspace, Generation: req.Generation, Code: code, Reason: fmt.Sprintf(format, args...)}
	}
	p = p.withDefaults()
	s := req.Spec
	if err := fsm.ValidateSpec(s); err != nil {
		return Plan{}, &Error{Op: op, Workspace: req.Workspace, Generation: req.Generation, Code: CodeInvalid, Reason: err.Error(), Err: err}
	}
	plan := Plan{Image: s.Image, CPUs: s.CPUs, MemoryBytes: s.MemoryBytes, PidsLimit: max(p.PidsLimit, 0), TmpBytes: p.TmpBytes}
	switch {
	case plan.Image == "":
		plan.Image = defaultImage
		if plan.Image == "" {
			return Plan{}, fail(CodeInvalid, "the spec names no image and no default image is configured: pass --image")
		}
	case plan.Image != defaultImage:
		if err := p.allowImage(plan.Image, defaultImage); err != nil {
			return Plan{}, fail(CodeNotAllowed, "%v", err)
		}
	}
	name := s.Profile
	if name == "" {
		name = p.DefaultProfile
	}
	prof, ok := LookupProfile(name)
	if !ok {
		return Plan{}, fail(CodeInvalid, "security profile %q does not exist: the profiles are %s", name, strings.Join(ProfileNames(), ", "))
	}
	if allowed := p.allowedProfiles(); !slices.Contains(allowed, name) {
		return Plan{}, fail(CodeNotAllowed, "security profile %s is not allowed here: serve allows %s (--allowed-profiles)",
			name, strings.Join(allowed, ", "))
	}
	plan.Profile = prof
	if plan.MemoryBytes == 0 {
		plan.MemoryBytes = max(p.DefaultMemoryBytes, 0)
	}
	if plan.CPUs == 0 {
		plan.CPUs = max(p.DefaultCPUs, 0)
	}
	// Judged as sent: Docker reads NanoCPUs 0 as no limit, and a CFS quota
	// that rounds to 0 (below minNanoCPUs) as none either. ValidateSpec
	// refuses such a spec; this also holds a default of an unvalidated
	// policy.
	if plan.CPUs > 0 && plan.NanoCPUs() < minNanoCPUs {
		return Plan{}, fail(CodeInvalid, "CPU limit %v is below %v, the smallest Docker enforces (less would be no limit at all): use at least %v",
			plan.CPUs, fsm.MinCPUs, fsm.MinCPUs)
	}
	// No limit (0) is above any maximum; Validate keeps the defaults
	// within them, so only a policy used unvalidated gets here with one.
	if p.MaxMemoryBytes > 0 && (plan.MemoryBytes > p.MaxMemoryBytes || plan.MemoryBytes == 0) {
		return Plan{}, fail(CodeNotAllowed, "%s is above the maximum %s that serve allows (--max-memory): ask for %s or less",
			limitName("memory", formatBytes(plan.MemoryBytes), plan.MemoryBytes == 0), formatBytes(p.MaxMemoryBytes), formatBytes(p.MaxMemoryBytes))
	}
	if p.MaxCPUs > 0 && (plan.CPUs > p.MaxCPUs || plan.CPUs == 0) {
		return Plan{}, fail(CodeNotAllowed, "%s is above the maximum %v that serve allows (--max-cpus): ask for %v or less",
			limitName("CPU", fmt.Sprint(plan.CPUs), plan.CPUs == 0), p.MaxCPUs, p.MaxCPUs)
	}
	if len(s.Labels) > 0 {
		plan.Labels = make(map[string]string, len(s.Labels))
		for k, v := range s.Labels {
			plan.Labels[LabelUserPrefix+k] = v
		}
	}
	return plan, nil
}

// limitName names a spec's limit in a refusal: "memory limit 8g", or "no
// memory limit" when there is none.
func limitName(what, value string, none bool) string {
	if none {
		return "no " + what + " limit"
	}
	return what + " limit " + value
}

// formatBytes writes n as --memory and --max-memory take it, exactly:
// 4g, 512m, 64k, or "4294967297 bytes" when no unit divides it.
func formatBytes(n int64) string {
	for _, u := range []struct {
		suffix string
		size   int64
	}{{"t", 1 << 40}, {"g", 1 << 30}, {"m", 1 << 20}, {"k", 1 << 10}} {
		if n != 0 && n%u.size == 0 {
			return fmt.Sprintf("%d%s", n/u.size, u.suffix)
		}
	}
	return fmt.Sprintf("%d bytes", n)
}

// allowedProfiles are the profiles a spec may name, strictest first: the
// allowed ones and any stricter than the default. Call on a policy with
// defaults.
func (p Policy) allowedProfiles() []string {
	var out []string
	strict := true // built-in profiles come strictest first
	for _, name := range ProfileNames() {
		if strict || slices.Contains(p.AllowedProfiles, name) {
			out = append(out, name)
		}
		if name == p.DefaultProfile {
			strict = false
		}
	}
	return out
}

// allowImage says why image may not run, or nil when it may.
func (p Policy) allowImage(image, defaultImage string) error {
	named, err := reference.ParseNormalizedNamed(image)
	if err != nil {
		return fmt.Errorf("image %q is not an image reference (%v): name one as repository[:tag][@digest]", image, err)
	}
	if _, tagged := named.(reference.Tagged); tagged {
		if _, digested := named.(reference.Digested); digested {
			// Docker resolves such a reference by its digest alone: the tag
			// a pattern would match says nothing of the image that runs.
			return fmt.Errorf("image %s names a tag and a digest; Docker runs the digest and ignores the tag, so --allowed-images cannot judge it: name the image by tag or by digest", image)
		}
	}
	forms := []string{image, reference.FamiliarString(named), named.String()}
	for _, pat := range p.AllowedImages {
		for _, f := range forms {
			if ok, _ := path.Match(pat, f); ok {
				return nil
			}
		}
	}
	allowed := "no other image"
	if len(p.AllowedImages) > 0 {
		allowed = "images matching " + strings.Join(p.AllowedImages, ", ")
	}
	def := "the default image"
	if defaultImage != "" {
		def += " " + defaultImage
	}
	return fmt.Errorf("image %s is not allowed here: serve allows %s and %s (--allowed-images)", image, def, allowed)
}
