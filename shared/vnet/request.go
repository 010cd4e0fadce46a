package vnet

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/brouter/brouter/shared/config"
	"github.com/brouter/brouter/shared/link"
	"github.com/brouter/brouter/shared/names"
)

// ErrInvalidPort marks an Attach refused for what it was asked (a name, an
// address, an MTU, a forward), before anything changed: callers report it as
// bad input (CNI: code 7, invalid network config; Xen: hotplug-error).
var ErrInvalidPort = errors.New("invalid port request")

type invalidPort struct{ error }

func (e invalidPort) Is(target error) bool { return target == ErrInvalidPort }
func (e invalidPort) Unwrap() error        { return e.error }

// validGuestAddr checks one guest address given at attach (Xen's ip=, CNI's
// IPAM result) against network n. Whitelisting one that is not a guest's
// would let the guest claim it: the gateway (it could then answer ARP for
// the host), the subnet's network or broadcast address, or an address
// outside every subnet of the network (except in mode route, where guests
// have addresses of their own that the host routes to them).
func validGuestAddr(n *config.Network, ip netip.Addr) error {
	if !ip.IsValid() || ip.IsUnspecified() || ip.IsMulticast() || ip.IsLoopback() || ip.Zone() != "" ||
		ip.IsLinkLocalUnicast() || ip == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
		return fmt.Errorf("%s is not a usable guest address", ip)
	}
	for _, gw := range []netip.Prefix{n.Gateway, n.Gateway6} {
		if gw.IsValid() && gw.Addr() == ip {
			return fmt.Errorf("%s is network %s's gateway, not a guest address", ip, n.Name)
		}
	}
	subnets := n.Subnets()
	in := false
	for _, s := range subnets {
		if !s.Contains(ip) {
			continue
		}
		in = true
		if maxBits := s.Addr().BitLen(); s.Bits() < maxBits-1 {
			if ip == s.Masked().Addr() {
				return fmt.Errorf("%s is the network address of %s, not a guest address", ip, s)
			}
			if ip.Is4() && ip == lastAddr(s) {
				return fmt.Errorf("%s is the broadcast address of %s, not a guest address", ip, s)
			}
		}
	}
	if !in && len(subnets) > 0 && n.Mode != config.ModeRoute {
		return fmt.Errorf("%s is outside network %s's subnets %v", ip, n.Name, subnets)
	}
	return nil
}

// guestDevice checks, before a fresh Attach changes anything, that device d
// can be a guest's port: a veth (CNI, tests), a tap (QEMU, Xen HVM's -emu
// device) or a Xen netback vif, on no bridge but this network's (bridge),
// and with no address but IPv6 link-local ones. Attach changes a port's
// MAC, MTU, master and IPv6: done to an uplink, lo or a configured NIC that
// would take the host off the network, so whatever a hook is handed, only a
// guest port is attached.
func (m *Manager) guestDevice(n *config.Network, d Device, bridge string) error {
	switch d.Kind {
	case link.KindVeth, link.KindTap, link.KindXenVif:
	case link.KindTun:
		return fmt.Errorf("%s is a tun device (no Ethernet): a guest port is a tap (QEMU: -netdev tap), a veth or a Xen vif", d.Name)
	case "device":
		return fmt.Errorf("%s is a physical or loopback device, not a guest port (a tap, a veth or a Xen vif)", d.Name)
	default:
		return fmt.Errorf("%s is a %s device, not a guest port (a tap, a veth or a Xen vif)", d.Name, d.Kind)
	}
	if d.MasterIndex != 0 && (bridge == "" || d.Master != bridge) {
		master := d.Master
		if master == "" {
			master = fmt.Sprintf("index %d", d.MasterIndex)
		}
		return fmt.Errorf("%s is already a port of %s, not of network %s: detach it there first", d.Name, master, n.Name)
	}
	addrs, err := m.Links.Addrs(d.Name)
	if err != nil {
		return err
	}
	for _, p := range addrs {
		if !p.Addr().IsLinkLocalUnicast() {
			return fmt.Errorf("%s has address %s, so it is not a guest port (the host uses it)", d.Name, p)
		}
	}
	return nil
}

// withPortRule completes a port's spec with the network's first
// [[network.NAME.port]] rule matching its name and guest MAC: the rule gives
// what the caller did not (the guest's MAC, its addresses), and turns
// antispoof on when it asks for it. What the caller knows wins (a vif's mac
// and ip keys, a container's MAC and IPAM addresses), and a rule never turns
// off antispoof that the caller or the network asks for.
func withPortRule(n *config.Network, p PortRequest) PortRequest {
	r := n.PortRuleFor(p.Name, p.GuestMAC)
	if r == nil {
		return p
	}
	if p.GuestMAC == nil {
		p.GuestMAC = slices.Clone(r.MAC)
	}
	if len(p.IPs) == 0 {
		p.IPs = slices.Clone(r.IPs)
	}
	p.Antispoof = p.Antispoof || r.Antispoof
	return p
}

// validatePort checks a request against its network before anything changes.
func validatePort(n *config.Network, p *PortRequest) error {
	if err := names.Interface(p.Name); err != nil {
		return fmt.Errorf("vnet: port: %w", err)
	}
	if p.Name == n.Bridge || p.Name == n.Uplink && n.Uplink != "" {
		return fmt.Errorf("vnet: port %s is network %s's own bridge or uplink", p.Name, n.Name)
	}
	for _, ip := range p.IPs {
		if err := validGuestAddr(n, ip); err != nil {
			return fmt.Errorf("vnet: port %s: %w", p.Name, err)
		}
	}
	if p.MTU < 0 || p.MTU > 65535 || p.MTU > 0 && p.MTU < 68 {
		return fmt.Errorf("vnet: port %s: MTU %d: want 68..65535", p.Name, p.MTU)
	}
	if n.Mode == config.ModeRoute && len(p.IPs) == 0 {
		return fmt.Errorf("vnet: port %s: network %s is in mode route, which routes each guest address to its port: give the guest's addresses (Xen: ip= in the vif spec)", p.Name, n.Name)
	}
	if p.Antispoof && p.GuestMAC == nil {
		return fmt.Errorf("vnet: port %s: antispoof needs the guest's MAC address", p.Name)
	}
	return validateForwards(n, p)
}
