package webhook

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"syscall"
)

// ErrForbiddenAddress is a webhook destination serve refuses to dial:
// loopback, private, link-local, shared (CGNAT), unspecified, multicast or
// otherwise not a public unicast address.
var ErrForbiddenAddress = errors.New("webhook destination is not a public address")

// internal are the ranges not named by netip's predicates that still
// reach inside: "this network", shared address space (RFC 6598), IETF
// protocol assignments, benchmarking, the reserved block, local-use NAT64
// (whose embedding varies), the IPv6 forms that embed an IPv4 address a
// host with the matching tunnel or translator routes to (IPv4-compatible,
// SIIT, 6to4, Teredo), the deprecated site-local block, discard-only, and
// documentation blocks.
var internal = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("100.64.0.0/10"),
	netip.MustParsePrefix("192.0.0.0/24"),
	netip.MustParsePrefix("192.0.2.0/24"),
	netip.MustParsePrefix("198.18.0.0/15"),
	netip.MustParsePrefix("198.51.100.0/24"),
	netip.MustParsePrefix("203.0.113.0/24"),
	netip.MustParsePrefix("240.0.0.0/4"),
	netip.MustParsePrefix("64:ff9b:1::/48"),
	netip.MustParsePrefix("::/96"),
	netip.MustParsePrefix("::ffff:0:0:0/96"),
	netip.MustParsePrefix("2002::/16"),
	netip.MustParsePrefix("2001::/32"),
	netip.MustParsePrefix("fec0::/10"),
	netip.MustParsePrefix("100::/64"),
	netip.MustParsePrefix("2001:db8::/32"),
}

// nat64 is NAT64's well-known prefix (RFC 6052): an IPv6-only host with
// DNS64 reaches every IPv4 receiver through it, so an address in it is
// judged by the IPv4 address it carries in its last 32 bits.
var nat64 = netip.MustParsePrefix("64:ff9b::/96")

// publicAddr reports whether a is a public unicast address.
func publicAddr(a netip.Addr) bool {
	a = a.Unmap() // ::ffff:127.0.0.1 is loopback
	if nat64.Contains(a) {
		b := a.As16()
		a = netip.AddrFrom4([4]byte(b[12:]))
	}
	if !a.IsValid() || a.IsLoopback() || a.IsPrivate() || a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast() ||
		a.IsInterfaceLocalMulticast() || a.IsMulticast() || a.IsUnspecified() || !a.IsGlobalUnicast() {
		return false
	}
	for _, p := range internal {
		if p.Contains(a) {
			return false
		}
	}
	return true
}

// checkHost refuses, before any lookup, a URL host that is an internal
// literal address, in any spelling a resolver reads as one, or a name
// that is local by definition.
func checkHost(host string) error {
	// A trailing dot makes a name absolute, and an address no different.
	h := strings.TrimSuffix(strings.Trim(host, "[]"), ".")
	if a, err := netip.ParseAddr(h); err == nil {
		if !publicAddr(a) {
			return fmt.Errorf("%s: %w", host, ErrForbiddenAddress)
		}
		return nil
	}
	h = strings.ToLower(h)
	if endsInNumber(h) {
		// 127.1, 0177.0.0.1, 0x7f.1: C resolvers and browsers read these
		// as IPv4 addresses; no public name ends in a number.
		return fmt.Errorf("%s is an IP address in another spelling (write it as a.b.c.d): %w", host, ErrForbiddenAddress)
	}
	if h == "localhost" || strings.HasSuffix(h, ".localhost") || strings.HasSuffix(h, ".local") ||
		strings.HasSuffix(h, ".internal") || !strings.Contains(h, ".") {
		return fmt.Errorf("%s is a local name: %w", host, ErrForbiddenAddress)
	}
	return nil
}

// endsInNumber reports whether the last label of host is a number,
// decimal or 0x hex (the WHATWG URL standard's test for an IPv4 host).
func endsInNumber(host string) bool {
	last := host[strings.LastIndexByte(host, '.')+1:]
	if hex, ok := strings.CutPrefix(last, "0x"); ok {
		return strings.Trim(hex, "0123456789abcdef") == ""
	}
	return last != "" && strings.Trim(last, "0123456789") == ""
}

// dialControl is the net.Dialer Control of webhook deliveries: it runs on
// the resolved address of every connection, after DNS, so a name that
// resolved to a public address at add and to an internal one now is
// refused.
func dialControl(_, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("webhook dial %s: %w", address, ErrForbiddenAddress)
	}
	if !publicAddr(ap.Addr()) {
		return fmt.Errorf("webhook dial %s: %w", address, ErrForbiddenAddress)
	}
	return nil
}

// newDialer returns the dialer of deliveries; allowPrivate turns the
// address check off (tests, and receivers on the same network).
func newDialer(allowPrivate bool) *net.Dialer {
	d := &net.Dialer{}
	if !allowPrivate {
		d.Control = dialControl
	}
	return d
}
