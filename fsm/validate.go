package fsm

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// Input limits. Ids double as NATS subject tokens, Docker names and URL
// segments, so they are DNS labels.
const (
	MaxIDLen        = 63
	MaxCommandIDLen = 128
	MaxActorLen     = 128
	MaxReasonLen    = 2048
	MaxImageLen     = 255
	MaxEnvVars      = 128
	MaxLabels       = 64
	MaxValueLen     = 4096
	MinMemoryBytes  = 6 << 20 // Docker refuses less
	MaxCPUs         = 1024
	// MinCPUs is the smallest CPU limit Docker enforces: 0.01 CPU is a CFS
	// quota of 1 ms per 100 ms period, the kernel's minimum. Docker does
	// not refuse less: a quota that rounds to 0 is no limit at all.
	MinCPUs = 0.01
)

var (
	containerIDPattern = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,128}$`)
	envKeyPattern      = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	labelKeyPattern    = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}$`)
	profilePattern     = regexp.MustCompile(`^[a-z]([a-z0-9-]{0,30}[a-z0-9])?$`)
)

// reservedLabelPrefixes are label key prefixes a spec may not use (compared
// without regard to case): Turnstile's own, the namespaces Docker reserves
// for itself, and the OCI image annotations tools read as the image's
// provenance. User labels are applied under a prefix of Turnstile's anyway;
// refusing these keeps a label from even looking like one of those.
var reservedLabelPrefixes = []string{"turnstile.", "com.docker.", "io.docker.", "org.dockerproject.", "org.opencontainers."}

// reservedLabel returns the reserved prefix key starts with, or "".
func reservedLabel(key string) string {
	k := strings.ToLower(key)
	for _, p := range reservedLabelPrefixes {
		if strings.HasPrefix(k, p) {
			return p
		}
	}
	return ""
}

// ValidateID checks a workspace id: a DNS label of 1 to 63 characters.
func ValidateID(id string) error {
	switch {
	case id == "":
		return fmt.Errorf("workspace id is empty: use 1-63 characters of a-z, 0-9 and '-'")
	case len(id) > MaxIDLen:
		return fmt.Errorf("workspace id is %d bytes long: at most %d allowed", len(id), MaxIDLen)
	case !isDNSLabel(id):
		return fmt.Errorf("workspace id %q is not a DNS label: use a-z, 0-9 and '-', starting and ending with a letter or digit", id)
	}
	return nil
}

// ValidateCommandID checks a command id, which names an outcome subject.
func ValidateCommandID(id string) error {
	if !isCommandID(id) {
		return fmt.Errorf("command id %q is invalid: use 1-128 characters of A-Z, a-z, 0-9, '_' and '-'", truncate(id, 140))
	}
	return nil
}

// isDNSLabel is ^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$ written out: every
// command checks its workspace id and command id several times (client,
// codec, Decide), and the regexp was most of the decode's remaining cost.
// FuzzValidateID holds it to the pattern.
func isDNSLabel(s string) bool {
	if len(s) < 1 || len(s) > MaxIDLen || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for i := range len(s) {
		if c := s[i]; !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// isCommandID is ^[A-Za-z0-9_-]{1,128}$ written out (FuzzValidateCommandID
// holds it to the pattern).
func isCommandID(s string) bool {
	if len(s) < 1 || len(s) > 128 {
		return false
	}
	for i := range len(s) {
		if c := s[i]; !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// SystemIDPrefix starts the ids of the reports Turnstile's own provisioner,
// supervisor and watcher send. User commands may not use it: a user who
// could send a command under a report's (predictable) id would take that
// report's outcome subject, and the report would find "its" outcome stored
// and never be decided (issue 12 item 3).
const SystemIDPrefix = "sys-"

// RefusalIDPrefix starts the ids the engine records a refusal under when
// a message has no usable id of its own (invalid-<stream seq>). User
// commands may not use it: such a refusal must not meet a command's id.
const RefusalIDPrefix = "invalid-"

// ValidateUserCommandID checks the id of a user command: a command id that
// does not start with SystemIDPrefix or RefusalIDPrefix.
func ValidateUserCommandID(id string) error {
	if err := ValidateCommandID(id); err != nil {
		return err
	}
	if IsSystemID(id) {
		return fmt.Errorf("command id %q starts with %q, which is reserved for Turnstile's own reports: choose another id", truncate(id, 140), SystemIDPrefix)
	}
	if strings.HasPrefix(id, RefusalIDPrefix) {
		return fmt.Errorf("command id %q starts with %q, which is reserved for the refusals of unreadable commands: choose another id", truncate(id, 140), RefusalIDPrefix)
	}
	return nil
}

// IsSystemID reports whether id has the shape reserved for system reports.
func IsSystemID(id string) bool { return strings.HasPrefix(id, SystemIDPrefix) }

// ValidateSpec checks a spec's fields, as a new command's spec must be.
func ValidateSpec(s Spec) error {
	if err := validateRecordedSpec(s); err != nil {
		return err
	}
	if s.CPUs > 0 && s.CPUs < MinCPUs {
		return fmt.Errorf("spec.cpus %v is below %v, the smallest CPU limit Docker enforces (less would be no limit at all): use 0 (serve's default) or %v-%d",
			s.CPUs, MinCPUs, MinCPUs, MaxCPUs)
	}
	return nil
}

// validateRecordedSpec checks what every spec an event records met when
// it was recorded: ValidateSpec but for MinCPUs, which came later
// (2026-12): an audit judges an older event by the rules it was taken
// under, and the provisioner refuses such a limit when it would be sent.
func validateRecordedSpec(s Spec) error {
	if len(s.Image) > MaxImageLen || strings.ContainsAny(s.Image, " \t\r\n") {
		return fmt.Errorf("spec.image %q is not an image reference", truncate(s.Image, 64))
	}
	if !(s.CPUs >= 0 && s.CPUs <= MaxCPUs) { // also refuses NaN
		return fmt.Errorf("spec.cpus %v is out of range 0-%d (0: serve's default)", s.CPUs, MaxCPUs)
	}
	if s.MemoryBytes < 0 || (s.MemoryBytes > 0 && s.MemoryBytes < MinMemoryBytes) {
		return fmt.Errorf("spec.memory_bytes %d is out of range: 0 (serve's default) or at least %d", s.MemoryBytes, MinMemoryBytes)
	}
	if len(s.Env) > MaxEnvVars {
		return fmt.Errorf("spec.env has %d variables: at most %d allowed", len(s.Env), MaxEnvVars)
	}
	for k, v := range s.Env {
		if !envKeyPattern.MatchString(k) || len(k) > 256 {
			return fmt.Errorf("spec.env key %q is not a variable name", truncate(k, 64))
		}
		if len(v) > MaxValueLen {
			return fmt.Errorf("spec.env[%s] is %d bytes: at most %d allowed", k, len(v), MaxValueLen)
		}
		if name, ok := SecretRef(v); ok {
			if err := ValidateSecretName(name); err != nil {
				return fmt.Errorf("spec.env[%s] is not a valid %sNAME reference: %w", k, SecretScheme, err)
			}
		}
	}
	if len(s.Labels) > MaxLabels {
		return fmt.Errorf("spec.labels has %d entries: at most %d allowed", len(s.Labels), MaxLabels)
	}
	for k, v := range s.Labels {
		if !labelKeyPattern.MatchString(k) {
			return fmt.Errorf("spec.labels key %q is invalid: use 1-128 letters, digits, '.', '_', '/' and '-', starting with a letter or digit", truncate(k, 64))
		}
		if p := reservedLabel(k); p != "" {
			return fmt.Errorf("spec.labels key %q is reserved: keys starting with %s are not for workspaces (reserved: %s)",
				truncate(k, 64), p, strings.Join(reservedLabelPrefixes, "*, ")+"*")
		}
		if len(v) > MaxValueLen {
			return fmt.Errorf("spec.labels[%s] is %d bytes: at most %d allowed", k, len(v), MaxValueLen)
		}
	}
	if s.Profile != "" && !profilePattern.MatchString(s.Profile) {
		return fmt.Errorf("spec.profile %q is not a profile name: use 1-32 characters of a-z, 0-9 and '-', starting with a letter (such as restricted)", truncate(s.Profile, 64))
	}
	return nil
}

// Validate checks a command's shape without looking at any state. It returns
// the concrete *Rejection (code invalid) so that Decide needs no assertion;
// callers that hold it in an error must compare the pointer, not the
// interface, with nil (err := c.Validate() does).
func (c Command) Validate() *Rejection { return c.validate(ValidateSpec) }

// validate is Validate with spec as the check of a spec.
func (c Command) validate(spec func(Spec) error) *Rejection {
	if !c.Type.Known() {
		return Invalid(c.Type, "unknown command type %q: use one of create, start, stop, restart, delete, configure", truncate(string(c.Type), 64))
	}
	if err := ValidateID(c.Workspace); err != nil {
		return Invalid(c.Type, "%v", err)
	}
	// System reports may use any command id (their senders choose ids in
	// SystemIDPrefix); user commands may not use that namespace.
	checkID := ValidateUserCommandID
	if c.Type.IsSystem() {
		checkID = ValidateCommandID
	}
	if err := checkID(c.ID); err != nil {
		return Invalid(c.Type, "%v", err)
	}
	if len(c.Actor) > MaxActorLen {
		return Invalid(c.Type, "actor is %d bytes: at most %d allowed", len(c.Actor), MaxActorLen)
	}
	if !c.Type.IsSystem() && IsSystemActor(c.Actor) {
		return Invalid(c.Type, "actor %q is Turnstile's own (%s), which send system reports only: a user command may not claim it",
			c.Actor, strings.Join(systemActors(), ", "))
	}
	if len(c.Reason) > MaxReasonLen {
		return Invalid(c.Type, "reason is %d bytes: at most %d allowed", len(c.Reason), MaxReasonLen)
	}
	if c.Spec != nil {
		if c.Type != Create && c.Type != Configure {
			return Invalid(c.Type, "%s takes no spec", c.Type)
		}
		if err := spec(*c.Spec); err != nil {
			return Invalid(c.Type, "%v", err)
		}
	}
	if c.Type == Configure && c.Spec == nil {
		return Invalid(c.Type, "configure needs a spec")
	}
	if c.Type.IsSystem() {
		if c.Generation == 0 {
			return Invalid(c.Type, "%s needs the generation it reports on", c.Type)
		}
	} else if c.Generation != 0 || c.Reason != "" || c.ExitCode != nil || c.ContainerID != "" {
		return Invalid(c.Type, "%s is a user command: generation, reason, exit_code and container_id belong to system outcomes", c.Type)
	}
	if c.ExitCode != nil && c.Type != ContainerExited {
		return Invalid(c.Type, "exit_code belongs to container_exited")
	}
	if c.ContainerID != "" && (c.Type != ProvisionSucceeded || !containerIDPattern.MatchString(c.ContainerID)) {
		return Invalid(c.Type, "container_id %q is invalid: it belongs to provision_succeeded and uses 1-128 characters of A-Z, a-z, 0-9, '_', '.' and '-'", truncate(c.ContainerID, 140))
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// systemActors are the actors of Turnstile's own parts (the provisioning
// worker, its watcher, supervisor and reconciler), which send system
// reports only; the history shows them as who did what.
func systemActors() []string {
	return []string{"provisioner", "worker", "watcher", "supervisor", "reconciler"}
}

// IsSystemActor reports whether actor names one of Turnstile's own parts,
// or reads as one (in any case, with invisible characters or spaces, with
// common lookalike letters: actorSkeleton): a user command claiming one
// would pass a NATS user's stop off as the worker's in the history, the
// read model and webhooks.
func IsSystemActor(actor string) bool {
	return slices.Contains(systemActors(), actorSkeleton(actor))
}
