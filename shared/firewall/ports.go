package firewall

import (
	"bytes"
	"net"
	"net/netip"
	"slices"
)

// PortRules is what one guest port may send (per-port antispoof). The rules
// themselves are guardPlan's (guard.go), the same for every port and every
// backend; a port brings its data: its guest's MAC and addresses.
//
// From a port with PortRules:
//   - frames whose source MAC is not MAC are dropped, and so are VLAN-tagged
//     frames (802.1Q, 802.1ad), whose inner header would escape the checks below;
//   - ARP must carry MAC as sender hardware address and one of the IPv4 IPs
//     (or 0.0.0.0, an ARP probe) as sender IP;
//   - IPv4 must come from one of the IPv4 IPs, except DHCP client traffic
//     (udp 68 → 67, from 0.0.0.0 or any address);
//   - IPv6 must come from one of the IPv6 IPs, a link-local address
//     (fe80::/10) or :: (DAD, MLD), except DHCPv6 client traffic (udp 546 → 547).
//
// And from every guarded port, ServiceOnly ones too: no DHCP server traffic
// (udp sport 67, 547), no router advertisements or redirects; and neighbour
// advertisements (and duplicate address detection) only for the guest's own
// IPv6 addresses or link-local ones.
//
// Ports without PortRules are not filtered.
type PortRules struct {
	// Network is the network's name; the port's entries live in that network's tables.
	Network string
	// Port is the host-side interface (vif1.0, tap0, a veth).
	Port string
	// MAC is the guest's MAC: frames from the port must carry it as source.
	MAC net.HardwareAddr
	// IPs are the allowed source addresses, IPv4 and IPv6. Empty: only DHCP,
	// ARP probes and IPv6 link-local / unspecified sources pass.
	IPs []netip.Addr
	// Bridged: the port is a bridge port (filtered in the bridge family, so
	// bridged and to-host traffic alike). False: a routed port (Xen "route"
	// mode, no bridge), filtered in the inet and arp families on the input interface.
	Bridged bool
	// ServiceOnly: the guest's MAC and addresses are unknown (MAC and IPs
	// empty): the port gets the guard's service rules only, which need
	// nothing of the port's own (no router advertisements, redirects or
	// DHCP server replies from the guest), and every other frame passes.
	ServiceOnly bool
}

// validate checks everything that ends up in a rule or a set element.
func (p PortRules) validate() error {
	if err := validNetwork(p.Network); err != nil {
		return err
	}
	if err := validIfname("port", p.Port); err != nil {
		return err
	}
	if p.ServiceOnly {
		if len(p.MAC) != 0 || len(p.IPs) != 0 {
			return errorf("port %s: a port with the service guard only has no MAC or addresses", p.Port)
		}
		return nil
	}
	if len(p.MAC) != 6 {
		return errorf("port %s: invalid MAC %q (want 6 bytes)", p.Port, p.MAC.String())
	}
	if p.MAC[0]&1 != 0 || bytes.Equal(p.MAC, make(net.HardwareAddr, 6)) {
		return errorf("port %s: MAC %s is not a unicast address", p.Port, p.MAC)
	}
	for _, a := range p.IPs {
		switch {
		case !a.IsValid():
			return errorf("port %s: invalid address", p.Port)
		case a.Zone() != "":
			return errorf("port %s: address %v has a zone", p.Port, a)
		case a.Is4In6():
			return errorf("port %s: address %v is IPv4-mapped (give it as %v)", p.Port, a, a.Unmap())
		case !a.IsGlobalUnicast() && !a.IsLinkLocalUnicast():
			// Unspecified, multicast, loopback, broadcast.
			return errorf("port %s: address %v is not a unicast address", p.Port, a)
		}
	}
	return nil
}

// addrs returns the port's IPv4 and IPv6 addresses, sorted, without duplicates.
func (p PortRules) addrs() (v4, v6 []netip.Addr) {
	for _, a := range p.IPs {
		if a.Is4() {
			v4 = append(v4, a)
		} else {
			v6 = append(v6, a)
		}
	}
	slices.SortFunc(v4, netip.Addr.Compare)
	slices.SortFunc(v6, netip.Addr.Compare)
	return slices.Compact(v4), slices.Compact(v6)
}

// clone returns a deep copy (the caller may reuse its slices).
func (p PortRules) clone() PortRules {
	p.MAC = slices.Clone(p.MAC)
	p.IPs = slices.Clone(p.IPs)
	return p
}

// validPortRef checks the arguments of RemovePort.
func validPortRef(network, port string) error {
	if err := validNetwork(network); err != nil {
		return err
	}
	return validIfname("port", port)
}
