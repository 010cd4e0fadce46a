package vnet

import (
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"

	"github.com/brouter/brouter/shared/config"
	"github.com/brouter/brouter/shared/dhcp"
)

// dhcpDirs are where a network's dnsmasq keeps its generated files and its leases.
func (m *Manager) dhcpDirs(network string) (run, state string) {
	return filepath.Join(m.Config.RunDir, network), filepath.Join(m.Config.StateDir, network)
}

// startDHCP runs the network's DHCP and DNS service as configured, or stops
// it when the config has none. Starting it again when it runs with the same
// config changes nothing; a dead one is started again.
func (m *Manager) startDHCP(n *config.Network) error {
	run, st := m.dhcpDirs(n.Name)
	if !hasDNSMasq(n) {
		return m.stopDHCP(n.Name) // the config may have dropped it
	}
	spec := dhcp.Spec{Network: n.Name, Bridge: n.Bridge, Gateway: n.Gateway, RunDir: run, StateDir: st, IPv6: ipv6Service(n)}
	if n.Overlay != nil {
		spec.MTU = n.MTU // the overlay's, as Start computed it
	}
	if d := n.DHCP; d != nil {
		spec.RangeStart, spec.RangeEnd, spec.LeaseTime = d.RangeStart, d.RangeEnd, d.LeaseTime
		spec.Domain, spec.Upstream = d.Domain, d.Upstream
		for _, h := range d.Hosts {
			spec.Hosts = append(spec.Hosts, dhcp.Host{MAC: h.MAC, IP: h.IP, IP6: h.IP6, Name: h.Name})
		}
	}
	return dhcp.Start(spec)
}

// configHosts are the network's static DHCP hosts from the config.
func configHosts(n *config.Network) []config.DHCPHost {
	if n.DHCP == nil {
		return nil
	}
	return n.DHCP.Hosts
}

// hasDNSMasq reports whether the network runs dnsmasq: for DHCP and DNS
// ([network.NAME.dhcp]), for router advertisements and DHCPv6
// ([network.NAME.dhcp6], implied by address6), or both. Either serves DNS.
func hasDNSMasq(n *config.Network) bool { return n.DHCP != nil || n.DHCP6 != nil }

// ipv6Service is the network's IPv6 address service in dnsmasq's terms (nil: none).
func ipv6Service(n *config.Network) *dhcp.IPv6 {
	d := n.DHCP6
	if d == nil {
		return nil
	}
	v := &dhcp.IPv6{Gateway: n.Gateway6, Mode: string(d.Mode), RangeStart: d.RangeStart, RangeEnd: d.RangeEnd, LeaseTime: d.LeaseTime}
	if n.MTU >= 1280 { // IPv6's minimum: a smaller bridge MTU has no IPv6 at all
		v.MTU = n.MTU
	}
	return v
}

// stopDHCP stops the network's dnsmasq, if it ever ran (its directory exists).
func (m *Manager) stopDHCP(network string) error {
	run, _ := m.dhcpDirs(network)
	if _, err := os.Stat(run); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return dhcp.Stop(network, run)
}

// staticLease registers the port's guest with the network's DHCP server when
// its address is known at attach time (a Xen vif's ip=, a port rule), and
// returns the MAC it registered ("" when none).
func (m *Manager) staticLease(n *config.Network, p PortRequest) (string, error) {
	if !hasDNSMasq(n) || p.GuestMAC == nil {
		return "", nil
	}
	for _, h := range configHosts(n) {
		if h.MAC.String() == p.GuestMAC.String() {
			return "", nil // the config's own host entry already covers it
		}
	}
	h := dhcp.Host{MAC: p.GuestMAC}
	for _, ip := range p.IPs {
		switch {
		case ip.Is4() && !h.IP.IsValid() && n.Subnet.Contains(ip) && ip != n.Gateway.Addr():
			h.IP = ip
		case ip.Is6() && !h.IP6.IsValid() && n.DHCP6 != nil && n.DHCP6.Mode.Stateful() && n.Subnet6.Contains(ip) && ip != n.Gateway6.Addr():
			h.IP6 = ip // its DHCPv6 address too
		}
	}
	if !h.IP.IsValid() && !h.IP6.IsValid() {
		return "", nil
	}
	run, _ := m.dhcpDirs(n.Name)
	if err := m.Leases.AddStaticLease(run, h); err != nil {
		return "", err
	}
	return p.GuestMAC.String(), nil
}

func (m *Manager) removeStaticLease(network, mac string) error {
	hw, err := net.ParseMAC(mac)
	if err != nil {
		return nil
	}
	run, _ := m.dhcpDirs(network)
	return m.Leases.RemoveStaticLease(run, hw)
}

// DHCPStatus is the state of a network's DHCP and DNS service.
type DHCPStatus struct {
	Running bool         `json:"running"`
	PID     int          `json:"pid,omitempty"`
	Leases  []dhcp.Lease `json:"leases"`
}

func (m *Manager) dhcpStatus(n *config.Network, st *Status) {
	if !hasDNSMasq(n) {
		return
	}
	run, state := m.dhcpDirs(n.Name)
	ds := &DHCPStatus{Leases: []dhcp.Lease{}}
	ds.PID, ds.Running = dhcp.Running(n.Name, run)
	if l, err := dhcp.Leases(state); err == nil && l != nil {
		ds.Leases = l
	} else if err != nil {
		st.Problems = append(st.Problems, err.Error())
	}
	st.DHCP = ds
}
