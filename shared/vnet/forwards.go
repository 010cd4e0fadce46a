package vnet

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/brouter/brouter/shared/config"
	"github.com/brouter/brouter/shared/firewall"
	"github.com/brouter/brouter/shared/names"
)

// Forward is one published port of a guest (CNI's portMappings): traffic to
// the host's HostIP:HostPort (any local address when HostIP is the zero
// Addr) is DNATed to GuestIP:GuestPort.
type Forward = firewall.Forward

// Published host ports are claimed host-wide, whatever the network or the
// firewall backend: a claim is a file run_dir/hostports/PROTO-HOSTIP-PORT
// naming its owner "network/port". A claim whose owner has no port record
// any more is stale and taken over. Claims are made and released under
// one host-wide lock (held for a few file operations).
const hostPortsDir = "hostports"

func hostPortLock() string { return "locks/hostports.lock" }

// claimName is the claim file of a forward's host side.
func claimName(f Forward) string {
	host := "any4"
	if f.GuestIP.Is6() {
		host = "any6"
	}
	if f.HostIP.IsValid() {
		host = strings.ReplaceAll(f.HostIP.String(), ":", "_")
	}
	return fmt.Sprintf("%s/%s-%s-%d", hostPortsDir, f.Proto, host, f.HostPort)
}

func describeHost(f Forward) string {
	host := "0.0.0.0"
	if f.GuestIP.Is6() {
		host = "[::]"
	}
	if f.HostIP.IsValid() {
		host = f.HostIP.String()
		if f.HostIP.Is6() {
			host = "[" + host + "]"
		}
	}
	return fmt.Sprintf("%s %s:%d", f.Proto, host, f.HostPort)
}

// validateForwards checks a port's forwards against its network before
// anything changes.
func validateForwards(n *config.Network, p *PortRequest) error {
	if len(p.Forwards) == 0 {
		return nil
	}
	if n.Mode == config.ModeBridge || n.Mode == config.ModeRoute {
		return fmt.Errorf("vnet: port %s: network %s is in mode %s; published ports need a network the host routes for (mode nat, routed or isolated)", p.Name, n.Name, n.Mode)
	}
	seen := map[string]bool{}
	for _, f := range p.Forwards {
		if !f.GuestIP.IsValid() {
			return fmt.Errorf("vnet: port %s: published port %s has no guest address", p.Name, describeHost(f))
		}
		inNet := n.Subnet.IsValid() && n.Subnet.Contains(f.GuestIP) || n.Subnet6.IsValid() && n.Subnet6.Contains(f.GuestIP)
		if !inNet {
			return fmt.Errorf("vnet: port %s: published port %s: guest address %s is not in network %s's subnets", p.Name, describeHost(f), f.GuestIP, n.Name)
		}
		k := claimName(f)
		if seen[k] {
			return fmt.Errorf("vnet: port %s: %s is published twice", p.Name, describeHost(f))
		}
		seen[k] = true
	}
	return nil
}

// claimHostPorts makes this port the owner of its forwards' host ports, and
// releases the ones it no longer publishes. A host port owned by another
// attached port is an error that changes nothing.
func (m *Manager) claimHostPorts(network, bridge, port string, want, had []Forward) error {
	if len(want) == 0 && len(had) == 0 {
		return nil
	}
	l, err := m.Records.Acquire(hostPortLock(), m.Config.LockTimeout)
	if err != nil {
		return fmt.Errorf("vnet: published ports: %w", err)
	}
	defer l.Release()
	owner := network + "/" + port
	var take []string
	for _, f := range want {
		name := claimName(f)
		cur, err := os.ReadFile(filepath.Join(m.Records.Dir, name))
		switch {
		case errors.Is(err, fs.ErrNotExist):
		case err != nil:
			return fmt.Errorf("vnet: published ports: %w", err)
		case string(cur) == owner:
			continue
		default:
			if other, ok := m.claimOwnerAttached(string(cur)); ok {
				if !strings.HasPrefix(other, "network ") {
					other = "port " + other
				}
				who := "port " + port
				if port == bridge && bridge != "" {
					who = "network " + network + ": forward"
				}
				return fmt.Errorf("vnet: %s: %s is already published by %s", who, describeHost(f), other)
			}
		}
		take = append(take, name)
	}
	for _, name := range take {
		if err := m.writeClaim(name, owner); err != nil {
			return err
		}
	}
	if err := m.releaseClaimsLocked(owner, had, want); err != nil {
		return err
	}
	return m.syncLocalnetLocked(network, bridge)
}

// claimOwnerAttached reports whether the owner ("network/port") of a claim
// is still attached, and names it.
func (m *Manager) claimOwnerAttached(owner string) (string, bool) {
	network, port, ok := strings.Cut(owner, "/")
	if !ok || config.ValidNetworkName(network) != nil || names.Interface(port) != nil {
		return "", false
	}
	if who, ok := m.forwardOwner(network, port); ok { // a network's own forwards
		return who, true
	}
	var pr portRecord
	had, err := m.Records.Read(portRecordName(network, port), &pr)
	if err != nil {
		return owner, true // unreadable: not ours to take
	}
	return port + " (network " + network + ")", had
}

func (m *Manager) writeClaim(name, owner string) error {
	p := filepath.Join(m.Records.Dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return fmt.Errorf("vnet: published ports: %w", err)
	}
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, []byte(owner), 0o644); err != nil {
		return fmt.Errorf("vnet: published ports: %w", err)
	}
	if err := os.Rename(tmp, p); err != nil {
		return fmt.Errorf("vnet: published ports: %w", err)
	}
	return nil
}

// releaseHostPorts drops the port's claims on its forwards.
func (m *Manager) releaseHostPorts(network, bridge, port string, had []Forward) error {
	if len(had) == 0 {
		return nil
	}
	l, err := m.Records.Acquire(hostPortLock(), m.Config.LockTimeout)
	if err != nil {
		return fmt.Errorf("vnet: published ports: %w", err)
	}
	defer l.Release()
	if err := m.releaseClaimsLocked(network+"/"+port, had, nil); err != nil {
		return err
	}
	return m.syncLocalnetLocked(network, bridge)
}

// syncLocalnetLocked makes route_localnet on the network's bridge follow its
// published ports (the caller holds the host port lock, so a port that
// publishes and one that unpublishes never undo each other): on while any
// port of the network publishes an IPv4 host port, since a connection from
// the host to 127.0.0.1:HostPort is DNATed to the guest and leaves through
// the bridge with a loopback source, which the kernel drops unless
// route_localnet is on; off again once none does, so that no path to the
// host's loopback stays open behind the firewall's loopback guard.
func (m *Manager) syncLocalnetLocked(network, bridge string) error {
	if bridge == "" {
		return nil // routed ports: the guest side is the port itself
	}
	on, err := m.publishesIPv4(network)
	if err != nil {
		return err
	}
	if err := m.Links.SetRouteLocalnet(bridge, on); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// publishesIPv4 reports whether a port of network claims an IPv4 host port.
// There are as many claims as published ports on the host: they are read in
// chunks, unsorted, up to the first of the network's (nearly always among
// the first read), so that publishing costs the same with 10 or 1000 of them.
func (m *Manager) publishesIPv4(network string) (bool, error) {
	dir := filepath.Join(m.Records.Dir, hostPortsDir)
	d, err := os.Open(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("vnet: published ports: %w", err)
	}
	defer d.Close()
	for {
		names, err := d.Readdirnames(64)
		for _, name := range names {
			// PROTO-HOST-PORT, HOST "any4", "any6", an IPv4 address or an IPv6 one with '_' for ':'.
			parts := strings.Split(name, "-")
			if len(parts) != 3 || parts[1] == "any6" || strings.Contains(parts[1], "_") {
				continue
			}
			owner, err := os.ReadFile(filepath.Join(dir, name))
			if err == nil && strings.HasPrefix(string(owner), network+"/") {
				return true, nil
			}
		}
		if errors.Is(err, io.EOF) {
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("vnet: published ports: %w", err)
		}
	}
}

// releaseClaimsLocked removes owner's claims on the forwards in had that are
// not in keep (the caller holds the host port lock).
func (m *Manager) releaseClaimsLocked(owner string, had, keep []Forward) error {
	kept := map[string]bool{}
	for _, f := range keep {
		kept[claimName(f)] = true
	}
	var errs []error
	for _, f := range had {
		name := claimName(f)
		if kept[name] {
			continue
		}
		p := filepath.Join(m.Records.Dir, name)
		if cur, err := os.ReadFile(p); err == nil && string(cur) == owner {
			if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, fmt.Errorf("vnet: published ports: %w", err))
			}
		}
	}
	return errors.Join(errs...)
}

// forwardRules is what the firewall needs for a port's forwards.
func forwardRules(n *config.Network, rec *record, port string, fw []Forward) firewall.Forwards {
	f := firewall.Forwards{Network: n.Name, Bridge: rec.Bridge, Port: port, Forwards: fw}
	for _, p := range []netip.Prefix{n.Subnet, n.Subnet6} {
		if p.IsValid() {
			f.Subnets = append(f.Subnets, p.Masked())
		}
	}
	return f
}

// publish makes want the port's forwards: host ports claimed, DNAT entries
// installed, and those of had (its forwards before) it no longer wants
// removed.
func (m *Manager) publish(n *config.Network, rec *record, fw firewall.Backend, port string, want, had []Forward) error {
	if len(want) == 0 && len(had) == 0 {
		return nil
	}
	bridge := rec.Bridge
	if !n.Gateway.IsValid() {
		bridge = "" // no IPv4 on the bridge: nothing to route from 127.0.0.1
	}
	if err := m.claimHostPorts(n.Name, bridge, port, want, had); err != nil {
		return err
	}
	if len(want) == 0 {
		return fw.RemoveForwards(n.Name, port)
	}
	return fw.EnsureForwards(forwardRules(n, rec, port, want))
}

// unpublish removes the port's forwards and releases their host ports.
func (m *Manager) unpublish(pr *portRecord) error {
	if len(pr.Forwards) == 0 {
		return nil
	}
	fw, err := m.firewall(pr.Firewall)
	if err != nil {
		return err
	}
	if err := fw.RemoveForwards(pr.Network, pr.Port); err != nil {
		return err
	}
	return m.releaseHostPorts(pr.Network, pr.Bridge, pr.Port, pr.Forwards)
}

// CheckPort reports whether port name is attached to network n as Attach
// left it: recorded, up, on the network's bridge, and with its published
// ports in the firewall (for CNI's CHECK).
func (m *Manager) CheckPort(n *config.Network, name string) error {
	var pr portRecord
	had, err := m.Records.Read(portRecordName(n.Name, name), &pr)
	if err != nil {
		return err
	}
	if !had {
		return fmt.Errorf("vnet: port %s is not attached to network %s", name, n.Name)
	}
	d, err := m.Links.Device(name)
	if err != nil {
		return fmt.Errorf("vnet: port %s: %w", name, err)
	}
	if !d.Up {
		return fmt.Errorf("vnet: port %s is down", name)
	}
	if pr.Bridge != "" {
		br, err := m.Links.Device(pr.Bridge)
		if err != nil {
			return fmt.Errorf("vnet: port %s: bridge %s: %w", name, pr.Bridge, err)
		}
		if d.MasterIndex != br.Index {
			return fmt.Errorf("vnet: port %s is not on bridge %s", name, pr.Bridge)
		}
	}
	if len(pr.Forwards) == 0 {
		return nil
	}
	fw, err := m.firewall(pr.Firewall)
	if err != nil {
		return err
	}
	lines, err := fw.List(n.Name)
	if err != nil {
		return err
	}
	for _, f := range pr.Forwards {
		if !slices.Contains(lines, firewall.ForwardLine(name, f)) {
			return fmt.Errorf("vnet: port %s: published port %s is missing from the firewall", name, f)
		}
	}
	return nil
}
