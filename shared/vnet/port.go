package vnet

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/brouter/brouter/shared/config"
	"github.com/brouter/brouter/shared/link"
)

// PortSpec is one port joining a network: a Xen vif, a QEMU tap or the host
// end of a CNI veth. Hooks fill in what their caller tells them.
type PortSpec struct {
	// Name of the host-side interface.
	Name string
	// MAC to give the host-side interface (nil: leave it). Xen vifs get
	// fe:ff:ff:ff:ff:ff so the bridge never adopts a guest port's address.
	MAC net.HardwareAddr
	// MTU of the port; 0 means the bridge's.
	MTU int
}

// portRecord remembers a port so Detach and Stop can undo exactly what Attach did.
type portRecord struct {
	Network  string    `json:"network"`
	Port     string    `json:"port"`
	Bridge   string    `json:"bridge"`
	Attached time.Time `json:"attached"`
}

func portDir(network string) string              { return "ports/" + network }
func portRecordName(network, port string) string { return portDir(network) + "/" + port + ".json" }

// Attach joins a port to a running network. Attaching an attached port again
// changes nothing.
func (m *Manager) Attach(n *config.Network, p PortSpec) error {
	if err := config.ValidIfname(p.Name); err != nil {
		return fmt.Errorf("vnet: port: %w", err)
	}
	l, err := m.lock(n.Name)
	if err != nil {
		return err
	}
	defer l.Release()
	var rec record
	had, err := m.Run.Read(recordName(n.Name), &rec)
	if err != nil {
		return err
	}
	if !had {
		return fmt.Errorf("vnet: attach %s: network %s is not running; start it first (network-virtual start net=%s)", p.Name, n.Name, n.Name)
	}
	if err := link.Attach(link.AttachSpec{Name: p.Name, Bridge: rec.Bridge, MTU: p.MTU, MAC: p.MAC}); err != nil {
		return fmt.Errorf("vnet: attach %s to network %s: %w", p.Name, n.Name, err)
	}
	return m.Run.Write(portRecordName(n.Name, p.Name), &portRecord{Network: n.Name, Port: p.Name, Bridge: rec.Bridge, Attached: time.Now().UTC()})
}

// Detach takes a port off its network and removes what Attach gave it. A port
// that is already gone, or was never attached, is not an error.
func (m *Manager) Detach(n *config.Network, name string) error {
	if err := config.ValidIfname(name); err != nil {
		return fmt.Errorf("vnet: port: %w", err)
	}
	l, err := m.lock(n.Name)
	if err != nil {
		return err
	}
	defer l.Release()
	var pr portRecord
	had, err := m.Run.Read(portRecordName(n.Name, name), &pr)
	if err != nil {
		return err
	}
	if port, err := link.Get(name); err == nil {
		// Only take it off our bridge, never off someone else's.
		if br, err := link.Get(n.Bridge); err == nil && port.Attrs().MasterIndex == br.Attrs().Index {
			if err := link.Detach(name); err != nil {
				return fmt.Errorf("vnet: detach %s from network %s: %w", name, n.Name, err)
			}
		}
	} else if !errors.Is(err, link.ErrNotFound) {
		return fmt.Errorf("vnet: detach %s: %w", name, err)
	}
	if had {
		return m.Run.Remove(portRecordName(n.Name, name))
	}
	return nil
}

// forgetPorts drops every port record of the network (the caller holds the lock).
func (m *Manager) forgetPorts(network string) error {
	names, err := m.Run.List(portDir(network))
	if err != nil {
		return err
	}
	var errs []error
	for _, f := range names {
		if strings.HasSuffix(f, ".json") {
			errs = append(errs, m.Run.Remove(portDir(network)+"/"+f))
		}
	}
	return errors.Join(errs...)
}
