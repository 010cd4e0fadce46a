package vnet

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"

	"github.com/brouter/brouter/shared/config"
	"github.com/brouter/brouter/shared/link"
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

// guestDevice checks, before a fresh Attach changes anything, that device l
// can be a guest's port: a veth (CNI, tests), a tap (QEMU, Xen HVM's -emu
// device) or a Xen netback vif, on no bridge but this network's, and with no
// address but IPv6 link-local ones. Attach changes a port's MAC, MTU,
// master and IPv6: done to an uplink, lo or a configured NIC that would
// take the host off the network, so whatever a hook is handed, only a guest
// port is attached.
func guestDevice(n *config.Network, l netlink.Link, bridgeIndex int) error {
	a := l.Attrs()
	switch kind := link.Kind(l); kind {
	case link.KindVeth, link.KindTap, link.KindXenVif:
	case link.KindTun:
		return fmt.Errorf("%s is a tun device (no Ethernet): a guest port is a tap (QEMU: -netdev tap), a veth or a Xen vif", a.Name)
	case "device":
		return fmt.Errorf("%s is a physical or loopback device, not a guest port (a tap, a veth or a Xen vif)", a.Name)
	default:
		return fmt.Errorf("%s is a %s device, not a guest port (a tap, a veth or a Xen vif)", a.Name, kind)
	}
	if a.MasterIndex != 0 && a.MasterIndex != bridgeIndex {
		master := fmt.Sprintf("index %d", a.MasterIndex)
		if m, err := netlink.LinkByIndex(a.MasterIndex); err == nil {
			master = m.Attrs().Name
		}
		return fmt.Errorf("%s is already a port of %s, not of network %s: detach it there first", a.Name, master, n.Name)
	}
	addrs, err := link.Addrs(l)
	if err != nil {
		return err
	}
	for _, p := range addrs {
		if !p.Addr().IsLinkLocalUnicast() {
			return fmt.Errorf("%s has address %s, so it is not a guest port (the host uses it)", a.Name, p)
		}
	}
	return nil
}

// bridgeIndex is the index of the network's bridge (0: none, or not found).
func bridgeIndex(name string) int {
	if name == "" {
		return 0
	}
	l, err := link.Get(name)
	if err != nil {
		return 0
	}
	return l.Attrs().Index
}
