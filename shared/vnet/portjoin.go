package vnet

import (
	"errors"
	"net/netip"
	"slices"

	"github.com/brouter/brouter/shared/config"
	"github.com/brouter/brouter/shared/link"
)

// join puts the port on the network: on its bridge, or in mode route routed
// to the guest's addresses. The last step of Attach: the guest's traffic
// flows from here on, through the state install put in place.
func (a *attachment) join() error {
	m, p, pr := a.m, a.p, &a.pr
	if a.n.Mode == config.ModeRoute {
		if err := m.attachRouted(a.n, p, pr); err != nil {
			return err
		}
		// Proxy entries pair this port with the network's other routed
		// ports, from their records: one port at a time, each recording
		// its addresses before the next looks (locks.go).
		err := m.withLock(ndProxyLockName(a.n.Name), func() error {
			if err := m.proxyNDP(a.n, p, pr, a.prev.NDProxy); err != nil {
				return err
			}
			return m.writePort(pr)
		})
		if err != nil {
			return err
		}
		if a.reattach {
			// Addresses the guest no longer has lose their routes.
			m.dropStaleRoutes(p.Name, a.prev.Routed, pr.Routed)
		}
		return nil
	}
	// A bridge port needs no IPv6 of its own (see link.SetIPv6).
	wasOn, err := m.Links.SetIPv6(p.Name, false)
	if err != nil {
		return err
	}
	pr.IPv6Off = pr.IPv6Off || wasOn
	if err := m.Links.Attach(link.AttachSpec{Name: p.Name, Bridge: a.net.Bridge, MTU: p.MTU, MAC: p.MAC, Hairpin: p.Hairpin || len(p.Forwards) > 0}); err != nil {
		return err
	}
	return isolatePort(a.n, p.Name, pr, a.prev.Isolated) // isolate_guests (policy.go)
}

// attachRouted sets up a port of a mode route network: up with its MTU and
// MAC, the network's gateway addresses as /32 and /128, proxy ARP, and a host
// route per guest address (Xen's vif-route).
func (m *Manager) attachRouted(n *config.Network, p PortRequest, pr *portRecord) error {
	mtu := p.MTU
	if mtu == 0 {
		mtu = n.MTU
	}
	if err := m.Links.Configure(p.Name, mtu, p.MAC); err != nil {
		return err
	}
	for _, gw := range []netip.Prefix{n.Gateway, n.Gateway6} {
		if !gw.IsValid() {
			continue
		}
		local := netip.PrefixFrom(gw.Addr(), gw.Addr().BitLen())
		pr.Local = append(pr.Local, local.String())
		if _, err := m.Links.EnsureAddr(p.Name, local); err != nil {
			return err
		}
	}
	if err := m.Links.SetProxyARP(p.Name); err != nil {
		return err
	}
	for _, ip := range p.IPs {
		src := n.Gateway.Addr()
		if ip.Is6() {
			src = n.Gateway6.Addr()
		}
		pr.Routed = append(pr.Routed, ip.String())
		if err := m.Links.EnsureHostRoute(p.Name, ip, src); err != nil {
			return err
		}
	}
	return nil
}

func (m *Manager) dropStaleRoutes(port string, old, now []string) {
	for _, s := range old {
		if a, err := netip.ParseAddr(s); err == nil && !slices.Contains(now, s) {
			_ = m.Links.DelHostRoute(port, a)
		}
	}
}

// undoRouted removes a routed port's host routes and gateway addresses.
func (m *Manager) undoRouted(pr *portRecord) error {
	var errs []error
	for _, s := range pr.Routed {
		if a, err := netip.ParseAddr(s); err == nil {
			errs = append(errs, m.Links.DelHostRoute(pr.Port, a))
		}
	}
	for _, s := range pr.Local {
		if p, err := netip.ParsePrefix(s); err == nil {
			errs = append(errs, m.Links.DelAddr(pr.Port, p))
		}
	}
	return errors.Join(errs...)
}
