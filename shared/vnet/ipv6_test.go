package vnet

import (
	"net"
	"net/netip"
	"testing"

	"github.com/brouter/brouter/shared/config"
)

// On a network with antispoof, a port whose guest's addresses are unknown
// (a DHCP guest behind a tap) still gets the service guard; a known guest
// gets the full guard; without antispoof, nothing.
func TestWantGuardService(t *testing.T) {
	mac, _ := net.ParseMAC("00:16:3e:00:00:01")
	ip := []netip.Addr{netip.MustParseAddr("10.0.0.5")}
	for _, c := range []struct {
		name      string
		antispoof bool
		p         PortRequest
		want      string // "", "service", "full"
	}{
		{"no antispoof, unknown guest", false, PortRequest{Name: "tap0"}, ""},
		{"antispoof, unknown guest", true, PortRequest{Name: "tap0"}, "service"},
		{"antispoof, MAC only", true, PortRequest{Name: "tap0", GuestMAC: mac}, "service"},
		{"antispoof, known guest", true, PortRequest{Name: "tap0", GuestMAC: mac, IPs: ip}, "full"},
		{"port asks for antispoof", false, PortRequest{Name: "tap0", GuestMAC: mac, Antispoof: true}, "full"},
	} {
		n := &config.Network{Name: "lab", Mode: config.ModeNAT, Antispoof: c.antispoof}
		g := wantGuard(n, c.p)
		got := ""
		switch {
		case g != nil && g.ServiceOnly:
			got = "service"
		case g != nil:
			got = "full"
		}
		if got != c.want {
			t.Errorf("%s: guard %q (%+v), want %q", c.name, got, g, c.want)
		}
	}
}
