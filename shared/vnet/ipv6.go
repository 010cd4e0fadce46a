package vnet

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/brouter/brouter/shared/config"
	"github.com/brouter/brouter/shared/link"
)

// IPv6 policy beyond addresses and rules: the host's own router
// advertisements on its uplink once it forwards IPv6, and proxy NDP for the
// guests of a mode route network.

// keepUplinkRA runs before Start turns IPv6 forwarding on, which makes the
// kernel ignore router advertisements on every interface whose accept_ra is
// 1: with uplink_accept_ra the uplink gets accept_ra = 2 (and keeps its
// SLAAC address and default route); without, the interfaces that would lose
// theirs (accept_ra 1 and routes learned from RAs) are named in one note.
// No other interface is ever changed.
func (m *Manager) keepUplinkRA(n *config.Network) error {
	if !n.Gateway6.IsValid() || n.Mode == config.ModeIsolated {
		return nil // no IPv6 forwarding
	}
	if n.UplinkAcceptRA {
		v, err := link.AcceptRA(n.Uplink)
		if err != nil {
			return fmt.Errorf("vnet: network %s: uplink_accept_ra: uplink %s: %w", n.Name, n.Uplink, err)
		}
		if v != 2 {
			return link.SetAcceptRA(n.Uplink, 2)
		}
		return nil
	}
	learners, err := link.RALearners()
	if err != nil {
		return fmt.Errorf("vnet: network %s: %w", n.Name, err)
	}
	var hit []string
	for _, l := range learners {
		if v, err := link.AcceptRA(l); err == nil && v == 1 {
			hit = append(hit, l)
		}
	}
	if len(hit) > 0 {
		m.notef("network %s: IPv6 forwarding makes the kernel ignore router advertisements on %s (accept_ra = 1), whose IPv6 routes came from them: set uplink_accept_ra = true with uplink = %q, or net.ipv6.conf.%s.accept_ra = 2 yourself",
			n.Name, strings.Join(hit, ", "), hit[0], hit[0])
	}
	return nil
}

// withSLAAC is a guarded guest's addresses plus, when it has no IPv6
// address of its own and the network's router advertisements offer SLAAC,
// the address SLAAC gives it with its MAC (EUI-64, RFC 4291): so a guest
// whose caller knows only its IPv4 address (a vif's ip=) still gets IPv6.
// Privacy and stable-privacy addresses (RFC 8981, 7217) cannot be known
// in advance: give those guests their IPv6 addresses (ip=, a port rule's ips).
func withSLAAC(n *config.Network, mac net.HardwareAddr, ips []netip.Addr) []netip.Addr {
	if n.DHCP6 == nil || !n.DHCP6.Mode.SLAAC() || len(mac) != 6 || slices.ContainsFunc(ips, netip.Addr.Is6) {
		return ips
	}
	b := n.Subnet6.Masked().Addr().As16()
	copy(b[8:], []byte{mac[0] ^ 2, mac[1], mac[2], 0xff, 0xfe, mac[3], mac[4], mac[5]})
	return append(slices.Clone(ips), netip.AddrFrom16(b))
}

// notef passes a note (not an error: the operation goes on) to the caller.
func (m *Manager) notef(format string, a ...any) {
	if m.Note != nil {
		m.Note(fmt.Sprintf(format, a...))
	}
}

// ndProxy is one proxy NDP entry a routed port's attach made: the host
// answers neighbour solicitations for Addr on Dev.
type ndProxy struct {
	Addr netip.Addr `json:"addr"`
	Dev  string     `json:"dev"`
}

// proxyNDP makes a routed port's IPv6 guests reachable on one on-link
// prefix, as proxy ARP does for IPv4 (mode route, Xen's vif-route): the host
// answers neighbour solicitations for the guest's addresses on the uplink
// (the network's, else the IPv6 default route's) and on the network's other
// routed ports, and for their guests' addresses on this port. Every entry
// it makes is recorded in pr, and those of prev (a reattach) that are no
// longer wanted go.
func (m *Manager) proxyNDP(n *config.Network, p PortRequest, pr *portRecord, prev []ndProxy) error {
	var mine []netip.Addr
	for _, a := range p.IPs {
		if a.Is6() {
			mine = append(mine, a)
		}
	}
	var want []ndProxy
	if len(mine) > 0 {
		up := n.Uplink
		if up == "" {
			var err error
			if up, err = link.DefaultRoute6Link(); err != nil {
				return err
			}
		}
		if up != "" {
			for _, a := range mine {
				want = append(want, ndProxy{a, up})
			}
		}
		others, err := m.routedPeers(n, p.Name)
		if err != nil {
			return err
		}
		for dev, addrs := range others {
			for _, a := range mine {
				want = append(want, ndProxy{a, dev})
			}
			for _, b := range addrs {
				want = append(want, ndProxy{b, p.Name})
			}
		}
	}
	devs := map[string]bool{}
	for _, e := range want {
		if !devs[e.Dev] {
			if err := link.SetProxyNDP(e.Dev); err != nil {
				return err
			}
			devs[e.Dev] = true
		}
		pr.NDProxy = append(pr.NDProxy, e)
		if err := link.AddNDProxy(e.Dev, e.Addr); err != nil {
			return err
		}
	}
	var stale []ndProxy
	for _, e := range prev {
		if !slices.Contains(want, e) {
			stale = append(stale, e)
		}
	}
	return undoNDProxies(stale)
}

// routedPeers returns the network's other routed ports and their guests'
// IPv6 addresses, from their records.
func (m *Manager) routedPeers(n *config.Network, self string) (map[string][]netip.Addr, error) {
	files, err := m.Records.List(portDir(n.Name))
	if err != nil {
		return nil, err
	}
	out := map[string][]netip.Addr{}
	for _, f := range files {
		var pr portRecord
		if !strings.HasSuffix(f, ".json") {
			continue
		}
		if ok, err := m.Records.Read(portDir(n.Name)+"/"+f, &pr); err != nil || !ok || pr.Port == self {
			continue
		}
		for _, s := range pr.Routed {
			if a, err := netip.ParseAddr(s); err == nil && a.Is6() {
				out[pr.Port] = append(out[pr.Port], a)
			}
		}
	}
	return out, nil
}

// undoNDProxies removes proxy entries; those already gone are fine.
func undoNDProxies(l []ndProxy) error {
	var errs []error
	for _, e := range l {
		if err := link.DelNDProxy(e.Dev, e.Addr); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
