package webhook

import (
	"errors"
	"net"
	"net/http"
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

// Other spellings of an internal address are refused at add too, not
// only at dial: the forms C resolvers and browsers read as IPv4 (a
// number as the last label: 127.1, octal, hex), a trailing dot, and
// names that net/http's IDNA mapping turns into one (fullwidth and
// circled digits); and ports no connection can use.
func TestCheckURLRefusesOtherSpellings(t *testing.T) {
	for _, raw := range []string{
		"http://127.0.0.1./x", "http://127.1/x", "http://0177.0.0.1/x", "http://0x7f.0.0.1/x",
		"http://10.0.0.1.:8080/x", "http://169.254.169.254./latest", "http://example.com.0x7f/x",
		"http://①②⑦.0.0.1/x", "http://１２７.０.０.１/x", "http://hooks.exämple.com/x",
		"http://example.com:0/x", "http://example.com:65536/x", "http://example.com:99999/x",
	} {
		var ie *InvalidError
		if err := checkURL(raw, false); !errors.As(err, &ie) || ie.Field != "url" {
			t.Errorf("checkURL(%q) = %v, want an InvalidError of url", raw, err)
		}
	}
	for _, raw := range []string{"https://8.8.8.8./x", "https://hooks.example.com:8443/x", "https://xn--exmple-cua.com/x", "https://a1.example.com/x"} {
		if err := checkURL(raw, false); err != nil {
			t.Errorf("checkURL(%q) = %v, want it accepted", raw, err)
		}
	}
	// The dial-time check stops what gets past the add all the same:
	// net/http dials "①②⑦.0.0.1" as 127.0.0.1.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c := &http.Client{Transport: &http.Transport{Proxy: nil, DialContext: newDialer(false).DialContext}}
	resp, err := c.Get("http://①②⑦.0.0.1:" + portOf(ln) + "/")
	if err == nil {
		_ = resp.Body.Close()
	}
	if !errors.Is(err, ErrForbiddenAddress) {
		t.Fatalf("GET http://①②⑦.0.0.1: %v, want ErrForbiddenAddress", err)
	}
}
