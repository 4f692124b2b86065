package webhook

import (
	"errors"
	"net"
	"net/netip"
	"testing"
)

func TestPublicAddr(t *testing.T) {
	for _, tc := range []struct {
		addr   string
		public bool
	}{
		{"8.8.8.8", true}, {"2606:4700::1111", true},
		{"127.0.0.1", false}, {"::1", false}, {"::ffff:127.0.0.1", false}, {"10.0.0.1", false},
		{"172.16.5.4", false}, {"192.168.1.1", false}, {"169.254.169.254", false}, {"fe80::1", false},
		{"fc00::1", false}, {"100.64.0.1", false}, {"0.0.0.0", false}, {"::", false}, {"224.0.0.1", false},
		{"255.255.255.255", false}, {"64:ff9b::7f00:1", false}, {"192.0.2.1", false},
		// IPv6 forms that carry an IPv4 address a host may route to:
		// IPv4-compatible, IPv4-translated (SIIT), 6to4 and Teredo; and
		// the deprecated site-local block.
		{"::7f00:1", false}, {"::a00:1", false}, {"::ffff:0:7f00:1", false}, {"2002:7f00:1::1", false},
		{"2002:a9fe:a9fe::1", false}, {"2001:0:4136:e378:8000:63bf:3fff:fdd2", false}, {"fec0::1", false},
		{"2001:4860:4860::8888", true},
		// NAT64's well-known prefix is how an IPv6-only host with DNS64
		// reaches an IPv4 receiver: judged by the IPv4 address it carries.
		{"64:ff9b::808:808", true}, {"64:ff9b::a00:1", false}, {"64:ff9b::a9fe:a9fe", false},
	} {
		if got := publicAddr(netip.MustParseAddr(tc.addr)); got != tc.public {
			t.Errorf("publicAddr(%s) = %v, want %v", tc.addr, got, tc.public)
		}
	}
}

// The check runs on the address dialled, whatever name led there.
func TestDialRefusesInternalAddresses(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, err = newDialer(false).DialContext(t.Context(), "tcp", "localhost:"+portOf(ln))
	if !errors.Is(err, ErrForbiddenAddress) {
		t.Fatalf("dial localhost: %v, want ErrForbiddenAddress", err)
	}
	c, err := newDialer(true).DialContext(t.Context(), "tcp", ln.Addr().String())
	if err != nil {
		t.Fatalf("dial with AllowPrivate: %v", err)
	}
	_ = c.Close()
}

func portOf(ln net.Listener) string {
	_, p, _ := net.SplitHostPort(ln.Addr().String())
	return p
}
