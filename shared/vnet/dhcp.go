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
	if n.DHCP == nil {
		return m.stopDHCP(n.Name) // the config may have dropped it
	}
	spec := dhcp.Spec{
		Network: n.Name, Bridge: n.Bridge, Gateway: n.Gateway,
		RangeStart: n.DHCP.RangeStart, RangeEnd: n.DHCP.RangeEnd, LeaseTime: n.DHCP.LeaseTime,
		Domain: n.DHCP.Domain, Upstream: n.DHCP.Upstream, RunDir: run, StateDir: st,
	}
	if n.Overlay != nil {
		spec.MTU = n.MTU // the overlay's, as Start computed it
	}
	for _, h := range n.DHCP.Hosts {
		spec.Hosts = append(spec.Hosts, dhcp.Host{MAC: h.MAC, IP: h.IP, Name: h.Name})
	}
	return dhcp.Start(spec)
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
	if n.DHCP == nil || p.GuestMAC == nil {
		return "", nil
	}
	for _, h := range n.DHCP.Hosts {
		if h.MAC.String() == p.GuestMAC.String() {
			return "", nil // the config's own host entry already covers it
		}
	}
	for _, ip := range p.IPs {
		if ip.Is4() && n.Subnet.Contains(ip) && ip != n.Gateway.Addr() {
			run, _ := m.dhcpDirs(n.Name)
			if err := dhcp.AddStaticLease(run, dhcp.Host{MAC: p.GuestMAC, IP: ip}); err != nil {
				return "", err
			}
			return p.GuestMAC.String(), nil
		}
	}
	return "", nil
}

func (m *Manager) removeStaticLease(network, mac string) error {
	hw, err := net.ParseMAC(mac)
	if err != nil {
		return nil
	}
	run, _ := m.dhcpDirs(network)
	return dhcp.RemoveStaticLease(run, hw)
}

// DHCPStatus is the state of a network's DHCP and DNS service.
type DHCPStatus struct {
	Running bool         `json:"running"`
	PID     int          `json:"pid,omitempty"`
	Leases  []dhcp.Lease `json:"leases"`
}

func (m *Manager) dhcpStatus(n *config.Network, st *Status) {
	if n.DHCP == nil {
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
