package vnet

import (
	"errors"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"

	"github.com/brouter/brouter/shared/dhcp"
	"github.com/brouter/brouter/shared/link"
	"github.com/brouter/brouter/shared/shape"
)

// The mechanisms a port's attachment uses, as small interfaces: the real
// ones (shared/link, shared/shape, shared/dhcp) in production, fakes in unit
// tests, so that vnet's policy (which port gets what, rollback, idempotence)
// is tested without root. The firewall comes the same way, through
// Manager.NewFirewall. Start, Stop and Status use the packages directly.

// Links is what port attachment asks of network devices (shared/link).
// Names are interface names; a device that does not exist is an error
// wrapping link.ErrNotFound from Device, and nothing to do for the
// removals (Detach, Restore, SetDown, DeleteAll, DelAddr, DelHostRoute).
type Links interface {
	// Device describes the named device.
	Device(name string) (Device, error)
	// Addrs lists the device's addresses.
	Addrs(name string) ([]netip.Prefix, error)
	// Attach puts a port on a bridge with its MTU and MAC, and sets it up.
	Attach(spec link.AttachSpec) error
	// Detach takes a port off whatever bridge it is on.
	Detach(name string) error
	// Configure gives a port that joins no bridge its MTU and MAC (0, nil:
	// leave them), and sets it up.
	Configure(name string, mtu int, mac net.HardwareAddr) error
	// Restore gives a device back its MTU and MAC, leaving it up or down.
	Restore(name string, mtu int, mac net.HardwareAddr) error
	SetDown(name string) error
	// SetIPv6 turns the device's IPv6 on or off, and says whether it was on.
	SetIPv6(name string, on bool) (wasOn bool, err error)
	SetProxyARP(name string) error
	SetRouteLocalnet(name string, on bool) error
	// EnsureAddr adds an address, and says whether it was missing.
	EnsureAddr(name string, p netip.Prefix) (added bool, err error)
	DelAddr(name string, p netip.Prefix) error
	// EnsureHostRoute routes addr to the device, with source address src.
	EnsureHostRoute(name string, addr, src netip.Addr) error
	DelHostRoute(name string, addr netip.Addr) error
	// DeleteAll deletes the devices, in one kernel batch.
	DeleteAll(names ...string) error
}

// Device is what port attachment needs to know of a network device.
type Device struct {
	Name string
	// Kind is link.Kind's: veth, tap, tun, xen-vif, bridge, ifb, device, ...
	Kind        string
	Index       int
	MasterIndex int    // the bridge it is a port of (0: none)
	Master      string // that bridge's name ("" when none or unknown)
	Up          bool
	MAC         net.HardwareAddr
	MTU         int
}

// Shaper is what port attachment asks of traffic shaping (shared/shape).
type Shaper interface {
	// ApplyPort makes the port's limits exactly these.
	ApplyPort(s shape.PortLimits) error
	// RemovePort removes the port's limits and its classes in the
	// network's aggregates ("" network: in any network's).
	RemovePort(port, network string) error
	// ForgetPort removes what outlives a deleted port: its classes in the
	// network's aggregates.
	ForgetPort(port, network string) error
}

// Leases is what port attachment asks of the network's DHCP server
// (shared/dhcp): static leases for guests whose address is known.
type Leases interface {
	AddStaticLease(runDir string, h dhcp.Host) error
	RemoveStaticLease(runDir string, mac net.HardwareAddr) error
}

// kernelLinks is Links on the kernel of the calling thread's namespace.
type kernelLinks struct{}

func (kernelLinks) Device(name string) (Device, error) {
	l, err := link.Get(name)
	if err != nil {
		return Device{}, err
	}
	a := l.Attrs()
	d := Device{Name: a.Name, Kind: link.Kind(l), Index: a.Index, MasterIndex: a.MasterIndex,
		Up: a.Flags&net.FlagUp != 0, MAC: a.HardwareAddr, MTU: a.MTU}
	if a.MasterIndex != 0 {
		if m, err := netlink.LinkByIndex(a.MasterIndex); err == nil {
			d.Master = m.Attrs().Name
		}
	}
	return d, nil
}

// withLink runs fn on the named link; a missing one is nothing to do.
func withLink(name string, fn func(l netlink.Link) error) error {
	l, err := link.Get(name)
	if errors.Is(err, link.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	return fn(l)
}

func (kernelLinks) Addrs(name string) ([]netip.Prefix, error) {
	l, err := link.Get(name)
	if err != nil {
		return nil, err
	}
	return link.Addrs(l)
}

func (kernelLinks) Attach(spec link.AttachSpec) error { return link.Attach(spec) }
func (kernelLinks) Detach(name string) error          { return link.Detach(name) }
func (kernelLinks) Configure(name string, mtu int, mac net.HardwareAddr) error {
	_, err := link.Configure(name, mtu, mac)
	return err
}
func (kernelLinks) Restore(name string, mtu int, mac net.HardwareAddr) error {
	return link.Restore(name, mtu, mac)
}
func (kernelLinks) SetDown(name string) error                  { return link.SetDown(name) }
func (kernelLinks) SetIPv6(name string, on bool) (bool, error) { return link.SetIPv6(name, on) }
func (kernelLinks) SetProxyARP(name string) error              { return link.SetProxyARP(name) }
func (kernelLinks) SetRouteLocalnet(name string, on bool) error {
	return link.SetRouteLocalnet(name, on)
}

func (kernelLinks) EnsureAddr(name string, p netip.Prefix) (bool, error) {
	l, err := link.Get(name)
	if err != nil {
		return false, err
	}
	return link.EnsureAddr(l, p)
}

func (kernelLinks) DelAddr(name string, p netip.Prefix) error {
	return withLink(name, func(l netlink.Link) error { return link.DelAddr(l, p) })
}

func (kernelLinks) EnsureHostRoute(name string, addr, src netip.Addr) error {
	l, err := link.Get(name)
	if err != nil {
		return err
	}
	return link.EnsureHostRoute(l, addr, src)
}

func (kernelLinks) DelHostRoute(name string, addr netip.Addr) error {
	return withLink(name, func(l netlink.Link) error { return link.DelHostRoute(l, addr) })
}

func (kernelLinks) DeleteAll(names ...string) error { return link.DeleteAll(names...) }

// kernelShaper is Shaper with shared/shape.
type kernelShaper struct{}

func (kernelShaper) ApplyPort(s shape.PortLimits) error { return shape.ApplyPort(s) }
func (kernelShaper) RemovePort(port, network string) error {
	return shape.RemovePortIn(port, network)
}
func (kernelShaper) ForgetPort(port, network string) error { return shape.ForgetPort(port, network) }

// dnsmasqLeases is Leases with shared/dhcp.
type dnsmasqLeases struct{}

func (dnsmasqLeases) AddStaticLease(runDir string, h dhcp.Host) error {
	return dhcp.AddStaticLease(runDir, h)
}
func (dnsmasqLeases) RemoveStaticLease(runDir string, mac net.HardwareAddr) error {
	return dhcp.RemoveStaticLease(runDir, mac)
}
