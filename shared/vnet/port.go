package vnet

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/brouter/brouter/shared/config"
	"github.com/brouter/brouter/shared/firewall"
	"github.com/brouter/brouter/shared/link"
	"github.com/brouter/brouter/shared/shape"
)

// PortSpec is one port joining a network: a Xen vif, a QEMU tap or the host
// end of a CNI veth. Hooks fill in what their caller tells them; Attach is
// the same code path for all of them.
type PortSpec struct {
	// Name of the host-side interface.
	Name string
	// MAC to give the host-side interface (nil: leave it). Xen vifs get
	// fe:ff:ff:ff:ff:ff so the bridge never adopts a guest port's address.
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
}

// portRecord remembers a port so Detach and Stop can undo exactly what Attach did.
type portRecord struct {
	Network  string    `json:"network"`
	Port     string    `json:"port"`
	Bridge   string    `json:"bridge,omitempty"`   // bridged ports
	Routed   []string  `json:"routed,omitempty"`   // mode route: guest addresses routed to the port
	Local    []string  `json:"local,omitempty"`    // mode route: gateway addresses put on the port
	Firewall string    `json:"firewall,omitempty"` // backend holding the port's antispoof rules
	SetUp    bool      `json:"set_up,omitempty"`   // the port was down and Attach set it up
	OldMAC   string    `json:"old_mac,omitempty"`  // the port's MAC before Attach changed it
	OldMTU   int       `json:"old_mtu,omitempty"`  // the port's MTU before Attach changed it
	Lease    string    `json:"lease,omitempty"`    // guest MAC registered as a static DHCP lease
	Attached time.Time `json:"attached"`
}

func portDir(network string) string              { return "ports/" + network }
func portRecordName(network, port string) string { return portDir(network) + "/" + port + ".json" }

// Attach joins a port to a running network: on the bridge (or, in mode route,
// routed to the guest's addresses), with its MTU and MAC, its shaping, and
// antispoof when asked. Attaching an attached port again applies the new spec
// and changes nothing else. A failed Attach leaves nothing behind.
func (m *Manager) Attach(n *config.Network, p PortSpec) (err error) {
	if err := validatePort(n, &p); err != nil {
		return err
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
	var prev portRecord
	reattach, err := m.Run.Read(portRecordName(n.Name, p.Name), &prev)
	if err != nil {
		return err
	}
	pr := portRecord{Network: n.Name, Port: p.Name, Attached: time.Now().UTC()}
	if reattach {
		pr.SetUp, pr.OldMAC, pr.OldMTU = prev.SetUp, prev.OldMAC, prev.OldMTU
	} else if l, err := link.Get(p.Name); err == nil {
		// What Attach changes, so that Detach can put it back.
		a := l.Attrs()
		pr.SetUp = a.Flags&net.FlagUp == 0 // Xen's vifs come down; netback waits for us
		pr.OldMAC, pr.OldMTU = a.HardwareAddr.String(), a.MTU
	}
	defer func() {
		if err != nil && !reattach {
			_ = m.undoPort(&pr)
			_ = m.Run.Remove(portRecordName(n.Name, p.Name))
		}
	}()
	if err := m.Run.Write(portRecordName(n.Name, p.Name), &pr); err != nil {
		return err // first, so that a crash mid-way still leaves Detach a record
	}

	if n.Mode == config.ModeRoute {
		if err := attachRouted(n, p, &pr); err != nil {
			return fmt.Errorf("vnet: attach %s to network %s: %w", p.Name, n.Name, err)
		}
		if reattach {
			// Addresses the guest no longer has lose their routes.
			dropStaleRoutes(p.Name, prev.Routed, pr.Routed)
		}
	} else {
		pr.Bridge = rec.Bridge
		if err := link.Attach(link.AttachSpec{Name: p.Name, Bridge: rec.Bridge, MTU: p.MTU, MAC: p.MAC}); err != nil {
			return fmt.Errorf("vnet: attach %s to network %s: %w", p.Name, n.Name, err)
		}
	}
	if err := applyShaping(n, p.Name, m.portShaping(n, p)); err != nil {
		return fmt.Errorf("vnet: attach %s to network %s: %w", p.Name, n.Name, err)
	}
	if err := m.guard(n, &rec, p, &pr); err != nil {
		return fmt.Errorf("vnet: attach %s to network %s: %w", p.Name, n.Name, err)
	}
	if pr.Lease, err = m.staticLease(n, p); err != nil {
		return fmt.Errorf("vnet: attach %s to network %s: %w", p.Name, n.Name, err)
	}
	if reattach && prev.Lease != "" && prev.Lease != pr.Lease {
		if err := m.removeStaticLease(n.Name, prev.Lease); err != nil {
			return fmt.Errorf("vnet: attach %s to network %s: %w", p.Name, n.Name, err)
		}
	}
	if reattach && prev.Firewall != "" && pr.Firewall == "" {
		if err := m.removeGuard(&prev); err != nil {
			return fmt.Errorf("vnet: attach %s to network %s: %w", p.Name, n.Name, err)
		}
	}
	return m.Run.Write(portRecordName(n.Name, p.Name), &pr)
}

func validatePort(n *config.Network, p *PortSpec) error {
	if err := config.ValidIfname(p.Name); err != nil {
		return fmt.Errorf("vnet: port: %w", err)
	}
	if p.Name == n.Bridge || p.Name == n.Uplink && n.Uplink != "" {
		return fmt.Errorf("vnet: port %s is network %s's own bridge or uplink", p.Name, n.Name)
	}
	for _, ip := range p.IPs {
		if !ip.IsValid() || ip.IsUnspecified() || ip.IsMulticast() || ip.IsLoopback() || ip.Zone() != "" {
			return fmt.Errorf("vnet: port %s: %s is not a usable guest address", p.Name, ip)
		}
	}
	if p.MTU < 0 || p.MTU > 65535 || p.MTU > 0 && p.MTU < 68 {
		return fmt.Errorf("vnet: port %s: MTU %d: want 68..65535", p.Name, p.MTU)
	}
	if n.Mode == config.ModeRoute && len(p.IPs) == 0 {
		return fmt.Errorf("vnet: port %s: network %s is in mode route, which routes each guest address to its port: give the guest's addresses (Xen: ip= in the vif spec)", p.Name, n.Name)
	}
	if p.Antispoof && p.GuestMAC == nil {
		return fmt.Errorf("vnet: port %s: antispoof needs the guest's MAC address", p.Name)
	}
	return nil
}

// attachRouted sets up a port of a mode route network: up with its MTU and
// MAC, the network's gateway addresses as /32 and /128, proxy ARP, and a host
// route per guest address (Xen's vif-route).
func attachRouted(n *config.Network, p PortSpec, pr *portRecord) error {
	mtu := p.MTU
	if mtu == 0 {
		mtu = n.MTU
	}
	port, err := link.Configure(p.Name, mtu, p.MAC)
	if err != nil {
		return err
	}
	for _, gw := range []netip.Prefix{n.Gateway, n.Gateway6} {
		if !gw.IsValid() {
			continue
		}
		local := netip.PrefixFrom(gw.Addr(), gw.Addr().BitLen())
		pr.Local = append(pr.Local, local.String())
		if _, err := link.EnsureAddr(port, local); err != nil {
			return err
		}
	}
	if err := link.SetProxyARP(p.Name); err != nil {
		return err
	}
	for _, ip := range p.IPs {
		src := n.Gateway.Addr()
		if ip.Is6() {
			src = n.Gateway6.Addr()
		}
		pr.Routed = append(pr.Routed, ip.String())
		if err := link.EnsureHostRoute(port, ip, src); err != nil {
			return err
		}
	}
	return nil
}

func dropStaleRoutes(port string, old, now []string) {
	l, err := link.Get(port)
	if err != nil {
		return
	}
	for _, s := range old {
		if a, err := netip.ParseAddr(s); err == nil && !contains(now, s) {
			_ = link.DelHostRoute(l, a)
		}
	}
}

// guard installs the port's antispoof rules when the caller or the network
// asks for them.
func (m *Manager) guard(n *config.Network, rec *record, p PortSpec, pr *portRecord) error {
	// The network's antispoof setting guards every port whose guest's MAC and
	// addresses are known; a guest whose address comes later (DHCP) cannot be
	// pinned to it at attach, and is covered by the subnet check of the
	// network's forward rules instead.
	if !p.Antispoof && !(n.Antispoof && p.GuestMAC != nil && len(p.IPs) > 0) {
		return nil
	}
	kind := rec.Backend
	if kind == "" { // mode bridge: the network has no rules of its own
		kind = n.Firewall
	}
	fw, err := m.NewFirewall(kind)
	if err != nil {
		return err
	}
	pr.Firewall = fw.Name()
	return fw.EnsurePort(firewall.PortRules{
		Network: n.Name,
		Port:    p.Name,
		MAC:     p.GuestMAC,
		IPs:     p.IPs,
		Bridged: n.Mode != config.ModeRoute,
	})
}

// portShaping is the policy for a port's limits: what the caller asked for,
// else the network's config for this port (per-guest rules, then defaults).
func (m *Manager) portShaping(n *config.Network, p PortSpec) config.PortShaping {
	conf := n.Shaping.ForPort(p.Name, p.GuestMAC)
	if p.Shaping == nil {
		return conf
	}
	sh := *p.Shaping
	sh.Priority = conf.Priority // callers give rates; priority is the host's policy
	return sh
}

// applyShaping puts the port's limits in place, or removes them when there are none.
func applyShaping(n *config.Network, port string, sh config.PortShaping) error {
	if sh.IsZero() && (n.Shaping == nil || n.Shaping.TotalToGuest == 0 && n.Shaping.TotalFromGuest == 0) {
		return shape.RemovePort(port)
	}
	return shape.ApplyPort(shape.PortSpec{
		Port:      port,
		ToGuest:   shape.Limit{Rate: sh.ToGuest, Burst: sh.ToGuestBurst},
		FromGuest: shape.Limit{Rate: sh.FromGuest, Burst: sh.FromGuestBurst},
		Priority:  sh.Priority,
		Network:   n.Name,
	})
}

// Detach takes a port off its network and removes everything Attach gave it.
// A port that is already gone, or was never attached, is not an error.
func (m *Manager) Detach(n *config.Network, name string) error {
	if err := config.ValidIfname(name); err != nil {
		return fmt.Errorf("vnet: port: %w", err)
	}
	l, err := m.lock(n.Name)
	if err != nil {
		return err
	}
	defer l.Release()
	pr := portRecord{Network: n.Name, Port: name, Bridge: n.Bridge}
	had, err := m.Run.Read(portRecordName(n.Name, name), &pr)
	if err != nil {
		return err
	}
	if err := m.undoPort(&pr); err != nil {
		return fmt.Errorf("vnet: detach %s from network %s: %w", name, n.Name, err)
	}
	if had {
		return m.Run.Remove(portRecordName(n.Name, name))
	}
	return nil
}

// undoPort removes what Attach gave a port, as its record says: antispoof
// rules, shaping, routes and addresses, its place on our bridge (a port that
// someone moved to another bridge stays there). Whatever is already gone is
// not an error.
func (m *Manager) undoPort(pr *portRecord) error {
	var errs []error
	errs = append(errs, m.removeGuard(pr), shape.RemovePort(pr.Port))
	if pr.Lease != "" {
		errs = append(errs, m.removeStaticLease(pr.Network, pr.Lease))
	}
	port, err := link.Get(pr.Port)
	if errors.Is(err, link.ErrNotFound) {
		return errors.Join(errs...) // routes and addresses went with the device
	}
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	errs = append(errs, undoRouted(port, pr))
	if pr.Bridge != "" {
		if br, err := link.Get(pr.Bridge); err == nil && port.Attrs().MasterIndex == br.Attrs().Index {
			errs = append(errs, link.Detach(pr.Port))
		}
	}
	if pr.SetUp {
		errs = append(errs, link.SetDown(pr.Port)) // as Xen's vif scripts do on offline
	}
	if mac, err := net.ParseMAC(pr.OldMAC); err == nil {
		errs = append(errs, link.Restore(pr.Port, pr.OldMTU, mac))
	}
	return errors.Join(errs...)
}

func undoRouted(port netlink.Link, pr *portRecord) error {
	var errs []error
	for _, s := range pr.Routed {
		if a, err := netip.ParseAddr(s); err == nil {
			errs = append(errs, link.DelHostRoute(port, a))
		}
	}
	for _, s := range pr.Local {
		if p, err := netip.ParsePrefix(s); err == nil {
			errs = append(errs, link.DelAddr(port, p))
		}
	}
	return errors.Join(errs...)
}

func (m *Manager) removeGuard(pr *portRecord) error {
	if pr.Firewall == "" {
		return nil
	}
	fw, err := m.NewFirewall(pr.Firewall)
	if err != nil {
		return err
	}
	return fw.RemovePort(pr.Network, pr.Port)
}

// detachRecordedPorts undoes Attach for every port recorded on the network
// (the caller holds the lock).
func (m *Manager) detachRecordedPorts(n *config.Network) error {
	names, err := m.Run.List(portDir(n.Name))
	if err != nil {
		return err
	}
	var errs []error
	for _, f := range names {
		if !strings.HasSuffix(f, ".json") {
			continue
		}
		var pr portRecord
		name := portDir(n.Name) + "/" + f
		if ok, err := m.Run.Read(name, &pr); err != nil || !ok {
			errs = append(errs, err)
			continue
		}
		if err := m.undoPort(&pr); err != nil {
			errs = append(errs, err)
			continue
		}
		errs = append(errs, m.Run.Remove(name))
	}
	return errors.Join(errs...)
}

// DetachPort detaches a port by name from whichever network it was attached
// to, as recorded. Hooks whose callers only know the device (Xen's offline,
// QEMU's ifdown) use it. A port with no record has its shaping removed, in
// case an earlier attach died before recording it, and is otherwise left alone.
func (m *Manager) DetachPort(name string) error {
	if err := config.ValidIfname(name); err != nil {
		return fmt.Errorf("vnet: port: %w", err)
	}
	nets, err := m.portNetworks()
	if err != nil {
		return err
	}
	found := false
	for _, network := range nets {
		var pr portRecord
		ok, err := m.Run.Read(portRecordName(network, name), &pr)
		if err != nil || !ok {
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
		if err := shape.RemovePort(name); err != nil {
			return fmt.Errorf("vnet: detach %s: %w", name, err)
		}
	}
	return nil
}

// portNetworks lists the networks that have port records.
func (m *Manager) portNetworks() ([]string, error) {
	ents, err := os.ReadDir(filepath.Join(m.Run.Dir, "ports"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("vnet: %w", err)
	}
	var out []string
	for _, e := range ents {
		if e.IsDir() {
			out = append(out, e.Name())
		}
	}
	return out, nil
}
