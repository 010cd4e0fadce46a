package vnet

import (
	"fmt"
	"net/netip"

	"github.com/brouter/brouter/shared/config"
	"github.com/brouter/brouter/shared/link"
)

// NetworkRequest is a network as a caller that brings its own settings
// describes it (a CNI config): a configured network by name or by bridge, or
// a bridge no network uses, made into an ad-hoc network the way the
// reference CNI bridge plugin makes one.
type NetworkRequest struct {
	Name   string // a [network.NAME]
	Bridge string // instead of Name: the network using it, else ad hoc
	MTU    int    // 0: the network's
	// Masquerade (CNI's ipMasq), when set: with a configured network it
	// must agree with the network's mode; ad hoc it picks mode nat.
	Masquerade *bool
	// Gateway (CNI's isGateway): an ad-hoc network's bridge carries the
	// guests' gateways; without it the bridge must exist (mode bridge).
	Gateway bool
}

// SelectNetwork picks the network r means. adHoc: r names a bridge that no
// [network.NAME] uses; the network's addresses then come from the guests'
// gateways (AdHocNetwork), so n is only good for its name until then. A
// request the config cannot satisfy is an error wrapping ErrInvalidPort.
func (m *Manager) SelectNetwork(r NetworkRequest) (n *config.Network, adHoc bool, err error) {
	spec := &config.NetworkSpec{}
	if r.Bridge != "" {
		b := r.Bridge
		spec.Bridge = &b
		adHoc = r.Name == "" && m.Config.NetworkByBridge(b) == nil
	}
	if r.MTU != 0 {
		mtu := r.MTU
		spec.MTU = &mtu
	}
	if n, err = m.Config.Select(r.Name, spec); err != nil {
		return nil, false, invalidPort{err}
	}
	if !adHoc && r.Masquerade != nil && *r.Masquerade != (n.Mode == config.ModeNAT) {
		return nil, false, invalidPort{fmt.Errorf("vnet: masquerading (ipMasq) is %v but network %s is in mode %s (set mode in [network.%s] of %s, or drop ipMasq)",
			*r.Masquerade, n.Name, n.Mode, n.Name, m.Config.Path)}
	}
	if n.Mode == config.ModeRoute {
		return nil, false, invalidPort{fmt.Errorf("vnet: network %s is in mode route (one routed port per guest, for Xen); a veth or tap needs a bridge", n.Name)}
	}
	return n, adHoc, nil
}

// AdHocNetwork is the network of a bridge the config does not know, built
// the way the reference bridge plugin builds one: with r.Gateway the first
// IPv4 and IPv6 gateways (with their subnets' prefixes) go on the bridge
// and r.Masquerade chooses between mode nat and routed; without it the
// bridge must exist and is only attached to (mode bridge).
func (m *Manager) AdHocNetwork(r NetworkRequest, gateways []netip.Prefix) (*config.Network, error) {
	spec := &config.NetworkSpec{Bridge: &r.Bridge}
	if r.MTU != 0 {
		spec.MTU = &r.MTU
	}
	mode := string(config.ModeBridge)
	if r.Gateway {
		mode = string(config.ModeRouted)
		if r.Masquerade != nil && *r.Masquerade {
			mode = string(config.ModeNAT)
		}
		for _, gw := range gateways {
			a := gw.String()
			if gw.Addr().Is4() && spec.Address == nil {
				spec.Address = &a
			} else if gw.Addr().Is6() && spec.Address6 == nil {
				spec.Address6 = &a
			}
		}
		if spec.Address == nil {
			return nil, invalidPort{fmt.Errorf("vnet: the guests' addresses have no IPv4 gateway to put on bridge %s (isGateway)", r.Bridge)}
		}
	}
	spec.Mode = &mode
	n, err := m.Config.Select("", spec)
	if err != nil {
		return nil, invalidPort{err}
	}
	if n.Mode == config.ModeBridge {
		if ok, err := link.Exists(r.Bridge); err != nil || !ok {
			return nil, invalidPort{fmt.Errorf("vnet: bridge %s does not exist: without isGateway brouter attaches to an existing bridge only (create it, set isGateway, or name a [network.NAME] of the host config)", r.Bridge)}
		}
	}
	return n, nil
}

// CheckGateways refuses a guest gateway inside the network that is not the
// network's own address: the guest's routes would lead nowhere.
func CheckGateways(n *config.Network, gateways []netip.Addr) error {
	for _, gw := range gateways {
		for _, p := range []netip.Prefix{n.Gateway, n.Gateway6} {
			if p.IsValid() && p.Masked().Contains(gw) && p.Addr() != gw {
				return invalidPort{fmt.Errorf("vnet: gateway %s is not network %s's address %s: set the guest's (IPAM range's) gateway to %s", gw, n.Name, p.Addr(), p.Addr())}
			}
		}
	}
	return nil
}

// GatewayFor is the network's gateway for a guest address in one of its
// subnets (invalid: none).
func GatewayFor(n *config.Network, a netip.Addr) netip.Addr {
	a = a.Unmap()
	switch {
	case a.Is4() && n.Gateway.IsValid() && n.Subnet.Contains(a):
		return n.Gateway.Addr()
	case a.Is6() && n.Gateway6.IsValid() && n.Subnet6.Contains(a):
		return n.Gateway6.Addr()
	}
	return netip.Addr{}
}

// GuestDNS is the name server (and search domain) of a guest that gets its
// addresses from the network without DHCP: the network's DHCP server
// answers DNS on its gateway address. None without [network.NAME.dhcp].
func GuestDNS(n *config.Network) (server netip.Addr, domain string) {
	if n.DHCP == nil {
		return netip.Addr{}, ""
	}
	return n.Gateway.Addr(), n.DHCP.Domain
}

// GuestAddr is one of a guest's addresses, with its subnet's length, and
// the gateway it was given for it (invalid: none).
type GuestAddr struct {
	Prefix  netip.Prefix
	Gateway netip.Addr
}

// GuestNetwork is network n (from SelectNetwork) once a guest's addresses
// and gateways are known: an ad-hoc network is built from them
// (AdHocNetwork) and started; a configured one must have the gateways as
// its own addresses (CheckGateways).
func (m *Manager) GuestNetwork(n *config.Network, r NetworkRequest, adHoc bool, addrs []GuestAddr) (*config.Network, error) {
	var gws []netip.Prefix
	for _, a := range addrs {
		if a.Gateway.IsValid() {
			gws = append(gws, netip.PrefixFrom(a.Gateway, a.Prefix.Bits()))
		}
	}
	if !adHoc {
		var addrs []netip.Addr
		for _, p := range gws {
			addrs = append(addrs, p.Addr())
		}
		return n, CheckGateways(n, addrs)
	}
	n, err := m.AdHocNetwork(r, gws)
	if err != nil {
		return nil, err
	}
	return n, m.EnsureStarted(n)
}

// DefaultGateways are the gateways of the default routes a guest gets: one
// per family it has an address of, via that address's gateway, else the
// network's, unless it has a default route of that family already.
func DefaultGateways(n *config.Network, addrs []GuestAddr, has4, has6 bool) []netip.Addr {
	var out []netip.Addr
	for _, a := range addrs {
		gw := a.Gateway
		if !gw.IsValid() {
			gw = GatewayFor(n, a.Prefix.Addr())
		}
		if v4 := a.Prefix.Addr().Is4(); gw.IsValid() && (v4 && !has4 || !v4 && !has6) {
			out = append(out, gw)
			has4, has6 = has4 || v4, has6 || !v4
		}
	}
	return out
}
