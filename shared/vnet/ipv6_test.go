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

// A guarded guest known by its IPv4 address only may use its EUI-64 SLAAC
// address on a network that offers SLAAC; with an IPv6 address of its own,
// or without SLAAC, nothing is added.
func TestWithSLAAC(t *testing.T) {
	mac, _ := net.ParseMAC("52:54:00:98:00:57")
	v4 := []netip.Addr{netip.MustParseAddr("10.0.0.5")}
	own6 := []netip.Addr{netip.MustParseAddr("10.0.0.5"), netip.MustParseAddr("fd00:98::5")}
	n := &config.Network{Name: "lab", Subnet6: netip.MustParsePrefix("fd00:98::/64"), DHCP6: &config.DHCP6{Mode: config.IPv6SLAAC}}
	if got := withSLAAC(n, mac, v4); len(got) != 2 || got[1].String() != "fd00:98::5054:ff:fe98:57" {
		t.Errorf("withSLAAC(IPv4 only) = %v, want the EUI-64 address fd00:98::5054:ff:fe98:57 added", got)
	}
	if got := withSLAAC(n, mac, own6); len(got) != 2 {
		t.Errorf("withSLAAC(own IPv6) = %v, want it unchanged", got)
	}
	n.DHCP6.Mode = config.IPv6DHCPv6
	if got := withSLAAC(n, mac, v4); len(got) != 1 {
		t.Errorf("withSLAAC(no SLAAC) = %v, want it unchanged", got)
	}
}

// Reconcile re-applies a service guard from its record as a service guard
// (a record with no MAC), and a full guard with its MAC.
func TestGuardRulesFromRecord(t *testing.T) {
	if p := guardRules("lab", "tap0", &guardRecord{Bridged: true, Service: true}); !p.ServiceOnly || p.MAC != nil || !p.Bridged {
		t.Errorf("service guard record -> %+v, want ServiceOnly", p)
	}
	if p := guardRules("lab", "tap0", &guardRecord{MAC: "52:54:00:00:00:01", Bridged: true}); p.ServiceOnly || p.MAC.String() != "52:54:00:00:00:01" {
		t.Errorf("full guard record -> %+v", p)
	}
}
