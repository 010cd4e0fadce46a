package vnet

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"path/filepath"

	"github.com/brouter/brouter/shared/config"
	"github.com/brouter/brouter/shared/names"
	"github.com/brouter/brouter/shared/state"
)

// HostPortMAC is the MAC hooks give the host side of a guest's port (a Xen
// vif, a QEMU tap). A bridge takes the lowest MAC of its ports as its own
// unless it has one set; fe:ff:ff:ff:ff:ff is never lower than a guest's,
// so the bridge never adopts a port's address. A fresh copy each call.
func HostPortMAC() net.HardwareAddr {
	return net.HardwareAddr{0xfe, 0xff, 0xff, 0xff, 0xff, 0xff}
}

// PortRequest is one port joining a network: a Xen vif, a QEMU tap or the host
// end of a CNI veth. Hooks fill in what their caller tells them; Attach is
// the same code path for all of them.
type PortRequest struct {
	// Name of the host-side interface.
	Name string
	// MAC to give the host-side interface (nil: leave it). Xen vifs and
	// QEMU taps get HostPortMAC.
	MAC net.HardwareAddr
	// MTU of the port; 0 means the bridge's (mode route: the network's).
	MTU int
	// GuestMAC is the guest's own MAC behind the port (for a Xen vif the
	// xenstore "mac" key). It selects per-guest config and is what antispoof
	// lets through. nil: unknown.
	GuestMAC net.HardwareAddr
	// IPs are the guest's addresses, when the caller knows them (Xen's "ip"
	// key, CNI's IPAM result). Antispoof allows exactly these; mode route
	// routes them to the port.
	IPs []netip.Addr
	// Antispoof: the caller asks for it (Xen: when "ip" is set). The network's
	// antispoof setting turns it on for every port whose guest MAC and IPs are known.
	Antispoof bool
	// Shaping given by the caller (Xen's "rate" key, CNI's bandwidth
	// capability). nil: take it from the network's config for this port.
	// The priority always comes from the config.
	Shaping *config.PortShaping
	// Forwards are the guest's published ports (CNI's portMappings). A host
	// port is published by one attached port at a time, host-wide.
	Forwards []Forward
	// Hairpin: frames may leave the bridge through the port they came in by
	// (CNI's hairpinMode).
	Hairpin bool
	// Owned: the caller created the device for this attachment (the host end
	// of a CNI veth). Detach deletes it, first, so that nothing reaches the
	// guest through it while the rest is undone.
	Owned bool
}

// Attach joins a port to a running network: on the bridge (or, in mode route,
// routed to the guest's addresses), with its MTU and MAC, its shaping, and
// antispoof when asked. The network's [[network.NAME.port]] rule for the
// port applies, whichever kind of port it is (see withPortRule). Attaching an
// attached port again applies the new spec and changes nothing else. A
// failed Attach leaves nothing behind.
//
// It holds the network's lock shared and the port's own (locks.go): ports
// attach at once, and Start and Stop wait for them.
func (m *Manager) Attach(n *config.Network, p PortRequest) (err error) {
	p = withPortRule(n, p)
	if err := validatePort(n, &p); err != nil {
		return invalidPort{err}
	}
	l, err := m.lockPort(n.Name, p.Name)
	if err != nil {
		return err
	}
	defer l.release()

	a, err := m.plan(n, p)
	if err != nil {
		return err
	}
	if err := a.recordIntent(); err != nil {
		return err
	}
	defer func() {
		if err != nil {
			a.rollback()
		}
	}()
	if err := a.install(); err != nil {
		return fmt.Errorf("vnet: attach %s to network %s: %w", p.Name, n.Name, err)
	}
	if err := a.join(); err != nil {
		return fmt.Errorf("vnet: attach %s to network %s: %w", p.Name, n.Name, err)
	}
	return a.recordDone()
}

// Detach takes a port off its network and removes everything Attach gave it.
// A port that is already gone, or was never attached, is not an error.
func (m *Manager) Detach(n *config.Network, name string) error {
	if err := names.Interface(name); err != nil {
		return fmt.Errorf("vnet: port: %w", err)
	}
	l, err := m.lockPort(n.Name, name)
	if err != nil {
		return err
	}
	defer l.release()
	return m.detachLocked(n, name)
}

// detachLocked is Detach for a caller holding the port's locks (or the
// network's, exclusively).
func (m *Manager) detachLocked(n *config.Network, name string) error {
	pr := portRecord{Network: n.Name, Port: name, Bridge: n.Bridge}
	had, err := m.Records.Read(portRecordName(n.Name, name), &pr)
	if err != nil {
		return err
	}
	if err := m.undoPort(&pr); err != nil {
		return fmt.Errorf("vnet: detach %s from network %s: %w", name, n.Name, err)
	}
	if had {
		return m.removePort(n.Name, name)
	}
	return nil
}

// detachRecordedPorts undoes Attach for every port recorded on the network
// (the caller holds the network's lock exclusively: no port is in flight).
func (m *Manager) detachRecordedPorts(n *config.Network) error {
	ports, err := m.Ports(n.Name)
	if err != nil {
		return err
	}
	var errs []error
	for _, port := range ports {
		pr, ok, err := m.readPort(n.Name, port)
		if err != nil || !ok {
			errs = append(errs, err)
			continue
		}
		if err := m.undoPort(&pr); err != nil {
			errs = append(errs, err)
			continue
		}
		errs = append(errs, m.removePort(n.Name, port))
	}
	return errors.Join(errs...)
}

// DetachPort detaches a port by name from whichever network it was attached
// to, as recorded. Hooks whose callers only know the device (Xen's offline,
// QEMU's ifdown) use it. A port with no record has its shaping removed, in
// case an earlier attach died before recording it, and is otherwise left alone.
// (Its lock is taken first, never around Detach: the network's lock comes
// before a port's.)
func (m *Manager) DetachPort(name string) error {
	if err := names.Interface(name); err != nil {
		return fmt.Errorf("vnet: port: %w", err)
	}
	nets, err := m.portNetworks()
	if err != nil {
		return err
	}
	found := false
	for _, network := range nets {
		pr, ok, err := m.readPort(network, name)
		if err != nil || !ok {
			// An Attach killed before its first record write may have
			// left that write's temp file.
			_ = m.removePort(network, name)
			continue
		}
		found = true
		n := &config.Network{Name: network, Bridge: pr.Bridge}
		if c, ok := m.Config.Networks[network]; ok {
			n = c
		}
		if err := m.Detach(n, name); err != nil {
			return err
		}
	}
	if !found {
		// Under the port's lock: after an Attach in flight.
		l, err := m.lockPortOnly(name)
		if err != nil {
			return err
		}
		defer l.Release()
		if err := m.Shaper.RemovePort(name, ""); err != nil {
			return fmt.Errorf("vnet: detach %s: %w", name, err)
		}
	}
	return nil
}

// portNetworks lists the networks that have port records.
func (m *Manager) portNetworks() ([]string, error) {
	return state.ListDir(filepath.Join(m.Records.Dir, "ports"), fs.DirEntry.IsDir)
}
