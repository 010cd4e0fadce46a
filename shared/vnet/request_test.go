package vnet

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/brouter/brouter/shared/config"
)

func TestValidGuestAddr(t *testing.T) {
	nat := &config.Network{Name: "lab", Mode: config.ModeNAT,
		Gateway: netip.MustParsePrefix("10.98.1.1/24"), Subnet: netip.MustParsePrefix("10.98.1.0/24"),
		Gateway6: netip.MustParsePrefix("fd00:1::1/64"), Subnet6: netip.MustParsePrefix("fd00:1::/64")}
	route := &config.Network{Name: "pub", Mode: config.ModeRoute,
		Gateway: netip.MustParsePrefix("10.98.1.1/24"), Subnet: netip.MustParsePrefix("10.98.1.0/24")}
	bridge := &config.Network{Name: "br", Mode: config.ModeBridge}
	for _, c := range []struct {
		n    *config.Network
		ip   string
		want string // "" valid, else part of the error
	}{
		{nat, "10.98.1.5", ""},
		{nat, "fd00:1::5", ""},
		{nat, "10.98.1.254", ""},
		{nat, "10.98.1.1", "gateway"},
		{nat, "fd00:1::1", "gateway"},
		{nat, "10.98.1.0", "network address"},
		{nat, "fd00:1::", "network address"},
		{nat, "10.98.1.255", "broadcast"},
		{nat, "10.98.2.5", "outside network lab's subnets"},
		{nat, "fd00:2::5", "outside network lab's subnets"},
		{nat, "127.0.0.1", "not a usable"},
		{nat, "0.0.0.0", "not a usable"},
		{nat, "224.0.0.1", "not a usable"},
		{nat, "255.255.255.255", "not a usable"},
		{nat, "fe80::1", "not a usable"},
		{route, "192.0.2.7", ""}, // mode route: the guest's own addresses, routed to it
		{route, "10.98.1.1", "gateway"},
		{bridge, "192.0.2.7", ""}, // no subnet known: nothing to check against
	} {
		err := validGuestAddr(c.n, netip.MustParseAddr(c.ip))
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s on %s: %v, want valid", c.ip, c.n.Name, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s on %s: %v, want an error with %q", c.ip, c.n.Name, err, c.want)
		}
	}
}

// A refused request is ErrInvalidPort, so that callers report bad input.
func TestAttachInvalidIsErrInvalidPort(t *testing.T) {
	n := &config.Network{Name: "lab", Mode: config.ModeNAT, Bridge: "brlab",
		Gateway: netip.MustParsePrefix("10.98.1.1/24"), Subnet: netip.MustParsePrefix("10.98.1.0/24")}
	m := &Manager{}
	err := m.Attach(n, PortRequest{Name: "vif1.0", IPs: []netip.Addr{netip.MustParseAddr("10.98.1.1")}})
	if !errors.Is(err, ErrInvalidPort) || !strings.Contains(err.Error(), "gateway") {
		t.Errorf("Attach with the gateway as guest address = %v, want ErrInvalidPort about the gateway", err)
	}
}
