package provisioner

import (
	"slices"
	"strconv"
	"strings"
)

// Built-in security profiles. There is no privileged profile, and none can
// be defined: a spec can loosen confinement only as far as standard.
const (
	// ProfileRestricted is the default: no capabilities, no privilege
	// gain, a read-only root filesystem (the data volume and a tmpfs /tmp
	// stay writable) and a non-root user.
	ProfileRestricted = "restricted"
	// ProfileStandard is for images that need root or a writable root
	// filesystem (package installs): Docker's default capabilities minus
	// NET_RAW and MKNOD, still no privilege gain.
	ProfileStandard = "standard"
)

// NonRootUser is the user:group a profile with NonRoot runs an image as
// when the image itself would run as root: nobody:nogroup on most
// distributions, owning nothing in the image.
const NonRootUser = "65534:65534"

// TmpPath is where a profile with a read-only root filesystem mounts a
// writable tmpfs.
const TmpPath = "/tmp"

// Profile is how tightly a workspace's container is confined. Limits
// (memory, CPUs, processes) come from the Policy and apply to every
// profile.
type Profile struct {
	Name string
	// CapAdd are the capabilities added back after all are dropped (the
	// container always starts from none).
	CapAdd []string
	// NoNewPrivileges keeps setuid binaries and file capabilities from
	// granting anything.
	NoNewPrivileges bool
	// ReadOnlyRootfs makes the image's filesystem read-only; the data
	// volume (DataPath) and a size-limited noexec tmpfs at TmpPath stay
	// writable, and the Docker backend puts such a tmpfs at each path the
	// image declares a VOLUME, where Docker would make a volume on disk.
	ReadOnlyRootfs bool
	// NonRoot runs an image whose user is root, or unset, as NonRootUser;
	// an image that names another user runs as that user.
	NonRoot bool
}

// Profiles returns the built-in profiles, strictest first.
func Profiles() []Profile {
	return []Profile{
		{Name: ProfileRestricted, NoNewPrivileges: true, ReadOnlyRootfs: true, NonRoot: true},
		{Name: ProfileStandard, NoNewPrivileges: true, CapAdd: []string{
			// Docker's default set without NET_RAW (packet spoofing on the
			// bridge) and MKNOD (device nodes): Kubernetes' "baseline"
			// minus MKNOD.
			"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL",
			"NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
		}},
	}
}

// ProfileNames returns the names of the built-in profiles, strictest first.
func ProfileNames() []string {
	var names []string
	for _, p := range Profiles() {
		names = append(names, p.Name)
	}
	return names
}

// LookupProfile returns the built-in profile called name.
func LookupProfile(name string) (Profile, bool) {
	i := slices.IndexFunc(Profiles(), func(p Profile) bool { return p.Name == name })
	if i < 0 {
		return Profile{}, false
	}
	return Profiles()[i], true
}

// IsRootUser reports whether an image's configured user (Docker's
// "user", "uid", "user:group" or "uid:gid"; empty means root) is root.
// A uid is read as the engine reads it (strconv.Atoi), so every spelling
// of 0 ("0", "00", "+0", "-0") is root. A user name other than root counts
// as not root: without the image's /etc/passwd it cannot be resolved, and
// with no capabilities and no privilege gain a uid 0 behind a name could
// do little more anyway.
func IsRootUser(user string) bool {
	u, _, _ := strings.Cut(user, ":")
	u = strings.TrimSpace(u)
	if u == "" || u == "root" {
		return true
	}
	n, err := strconv.Atoi(u)
	return err == nil && n == 0
}
