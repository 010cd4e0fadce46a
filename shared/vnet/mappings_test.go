package vnet

import (
	"net/netip"
	"testing"
)

// ForwardsFor gives each mapping (as CNI's portMappings give them) the
// guest's addresses of its family.
func TestForwardsFor(t *testing.T) {
	v4, v6 := netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("fd00::2")
	pm := func(hostIP string) Forward {
		f, err := ParseMapping(PortMapping{HostPort: 8080, GuestPort: 80, Proto: "TCP", HostIP: hostIP})
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	for _, tc := range []struct {
		name  string
		maps  []Forward
		ips   []netip.Addr
		guest []netip.Addr
	}{
		{"any address, both families", []Forward{pm("")}, []netip.Addr{v4, v6}, []netip.Addr{v4, v6}},
		{"0.0.0.0 is IPv4 only", []Forward{pm("0.0.0.0")}, []netip.Addr{v4, v6}, []netip.Addr{v4}},
		{":: is IPv6 only", []Forward{pm("::")}, []netip.Addr{v4, v6}, []netip.Addr{v6}},
		{"hostIP picks its family", []Forward{pm("192.0.2.1")}, []netip.Addr{v4, v6}, []netip.Addr{v4}},
		{"no address of the family", []Forward{pm("2001:db8::1")}, []netip.Addr{v4}, nil},
	} {
		got := ForwardsFor(tc.maps, tc.ips)
		if len(got) != len(tc.guest) {
			t.Errorf("%s: %v, want guests %v", tc.name, got, tc.guest)
			continue
		}
		for i, f := range got {
			if f.GuestIP != tc.guest[i] || f.Proto != "tcp" || f.HostPort != 8080 || f.GuestPort != 80 {
				t.Errorf("%s: forward %d = %+v", tc.name, i, f)
			}
			if f.HostIP.IsValid() && f.HostIP.IsUnspecified() {
				t.Errorf("%s: forward %d keeps an unspecified hostIP", tc.name, i)
			}
		}
	}
}
