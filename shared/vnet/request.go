package vnet

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/brouter/brouter/shared/config"
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
