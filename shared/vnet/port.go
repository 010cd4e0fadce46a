package vnet

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/brouter/brouter/shared/config"
	"github.com/brouter/brouter/shared/firewall"
	"github.com/brouter/brouter/shared/link"
	"github.com/brouter/brouter/shared/names"
	"github.com/brouter/brouter/shared/shape"
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

// portRecord remembers a port so Detach and Stop can undo exactly what Attach did.
//
// It is written before Attach changes anything and removed only after Detach
// has undone everything, so a port without a record has nothing installed.
// What the firewall installed exactly is the firewall backend's own record
// (firewall/installed.go); this one says which backend holds the port's
// entries and what they are for.
type portRecord struct {
	// V is the record's format: from 2 on, Guard says whether the port has
	// antispoof entries; before, Firewall alone meant "antispoof entries".
	V        int       `json:"v,omitempty"`
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
	Owned    bool      `json:"owned,omitempty"`    // Detach deletes the device
	IPv6Off  bool      `json:"ipv6_off,omitempty"` // Attach turned the port's IPv6 off
	Claimed  bool      `json:"claimed,omitempty"`  // the guest's addresses are claimed from the allocator
	Isolated bool      `json:"isolated,omitempty"` // bridge port flag isolated (isolate_guests)
	Overlay  string    `json:"overlay,omitempty"`  // guest MAC given to the firewall as a local guest of the network's overlay
	Attached time.Time `json:"attached"`

	Guard    *guardRecord `json:"guard,omitempty"`    // antispoof entries (V 2; nil: none)
	Forwards []Forward    `json:"forwards,omitempty"` // published ports (and claimed host ports)
}

// guardRecord is a port's antispoof entries, as asked of the firewall.
type guardRecord struct {
	MAC     string       `json:"mac"`
	IPs     []netip.Addr `json:"ips,omitempty"`
	Bridged bool         `json:"bridged"`
}

const portRecordVersion = 3

func portDir(network string) string              { return "ports/" + network }
func portRecordName(network, port string) string { return portDir(network) + "/" + port + ".json" }

// Attach joins a port to a running network: on the bridge (or, in mode route,
// routed to the guest's addresses), with its MTU and MAC, its shaping, and
// antispoof when asked. The network's [[network.NAME.port]] rule for the
// port applies, whichever kind of port it is (see withPortRule). Attaching an
// attached port again applies the new spec and changes nothing else. A
// failed Attach leaves nothing behind.
func (m *Manager) Attach(n *config.Network, p PortRequest) (err error) {
	p = withPortRule(n, p)
	if err := validatePort(n, &p); err != nil {
		return invalidPort{err}
	}
	l, err := m.lock(n.Name)
	if err != nil {
		return err
	}
	defer l.Release()
	var rec record
	had, err := m.Records.Read(recordName(n.Name), &rec)
	if err != nil {
		return err
	}
	if !had {
		return fmt.Errorf("vnet: attach %s: network %s is not running; start it first (network-virtual start net=%s)", p.Name, n.Name, n.Name)
	}
	var prev portRecord
	reattach, err := m.Records.Read(portRecordName(n.Name, p.Name), &prev)
	if err != nil {
		return err
	}
	pr := portRecord{V: portRecordVersion, Network: n.Name, Port: p.Name, Owned: p.Owned, Attached: time.Now().UTC()}
	if reattach {
		pr.SetUp, pr.OldMAC, pr.OldMTU = prev.SetUp, prev.OldMAC, prev.OldMTU
		pr.Owned = pr.Owned || prev.Owned
		pr.IPv6Off = prev.IPv6Off
	} else if l, err := link.Get(p.Name); err == nil {
		if err := guestDevice(n, l, bridgeIndex(rec.Bridge)); err != nil {
			return invalidPort{fmt.Errorf("vnet: attach %s to network %s: %w", p.Name, n.Name, err)}
		}
		// What Attach changes, so that Detach can put it back.
		a := l.Attrs()
		pr.SetUp = a.Flags&net.FlagUp == 0 // Xen's vifs come down; netback waits for us
		pr.OldMAC, pr.OldMTU = a.HardwareAddr.String(), a.MTU
	}

	// The firewall entries are decided before anything changes, and recorded
	// first: a crash midway leaves Detach a record of everything that may be
	// installed. A fresh port has nothing yet, so the record can tell the
	// firewall exactly what to remove; during a change it says "unknown".
	guard := wantGuard(n, p)
	var fw firewall.Backend
	if guard != nil || len(p.Forwards) > 0 || prev.Firewall != "" {
		if fw, err = m.backendFor(n, &rec); err != nil {
			return fmt.Errorf("vnet: attach %s to network %s: %w", p.Name, n.Name, err)
		}
		pr.Firewall = fw.Name()
	}
	if guard != nil {
		pr.Guard = &guardRecord{MAC: guard.MAC.String(), IPs: guard.IPs, Bridged: guard.Bridged}
	} else if reattach && prev.Firewall != "" && (prev.V < 2 || prev.Guard != nil) {
		pr.Guard = &guardRecord{} // being removed
	}
	pr.Forwards = p.Forwards
	if reattach {
		pr.Forwards = unionForwards(prev.Forwards, p.Forwards)
	}
	defer func() {
		if err != nil && !reattach {
			// The record goes only when everything it lists is gone.
			if m.undoPort(&pr) == nil {
				_ = m.Records.Remove(portRecordName(n.Name, p.Name))
			}
		}
	}()
	pr.Claimed = len(p.IPs) > 0 || reattach && prev.Claimed
	pr.Overlay = overlayGuestMAC(n, p)
	if err := m.Records.Write(portRecordName(n.Name, p.Name), &pr); err != nil {
		return err
	}
	if pr.Claimed {
		if err := m.claimAddrs(n, p.Name, p.IPs); err != nil {
			return err
		}
	}

	// The port's shaping, antispoof entries and published ports are
	// independent, and each waits on the kernel (an ifb's creation, an
	// nf_tables commit): they are set up at once, and before the port joins
	// the network, so the guest's first frame already meets them.
	err = parallel(
		func() error {
			// A device made for this attachment has no shaping to remove.
			if sh := m.portShaping(n, p); reattach || !p.Owned || !sh.IsZero() || n.Shaping != nil {
				return applyShaping(n, p.Name, sh)
			}
			return nil
		},
		func() error {
			switch {
			case guard != nil:
				return fw.EnsurePort(*guard)
			case reattach && prev.Firewall != "":
				return m.removeGuard(&prev)
			}
			return nil
		},
		func() error {
			if fw == nil {
				return nil
			}
			return m.publish(n, &rec, fw, p.Name, p.Forwards, prev.Forwards)
		},
	)
	if err != nil {
		return fmt.Errorf("vnet: attach %s to network %s: %w", p.Name, n.Name, err)
	}
	if guard == nil {
		pr.Guard = nil
	}
	if err := m.attachOverlayGuest(n, &rec, &pr, &prev); err != nil {
		return fmt.Errorf("vnet: attach %s to network %s: %w", p.Name, n.Name, err)
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
		// A bridge port needs no IPv6 of its own (see link.SetIPv6).
		wasOn, err := link.SetIPv6(p.Name, false)
		if err != nil {
			return fmt.Errorf("vnet: attach %s to network %s: %w", p.Name, n.Name, err)
		}
		pr.IPv6Off = pr.IPv6Off || wasOn
		if err := link.Attach(link.AttachSpec{Name: p.Name, Bridge: rec.Bridge, MTU: p.MTU, MAC: p.MAC, Hairpin: p.Hairpin || len(p.Forwards) > 0}); err != nil {
			return fmt.Errorf("vnet: attach %s to network %s: %w", p.Name, n.Name, err)
		}
		if err := isolatePort(n, p.Name, &pr, prev.Isolated); err != nil { // isolate_guests (policy.go)
			return fmt.Errorf("vnet: attach %s to network %s: %w", p.Name, n.Name, err)
		}
	}
	pr.Forwards = p.Forwards
	if pr.Lease, err = m.staticLease(n, p); err != nil {
		return fmt.Errorf("vnet: attach %s to network %s: %w", p.Name, n.Name, err)
	}
	if reattach && prev.Lease != "" && prev.Lease != pr.Lease {
		if err := m.removeStaticLease(n.Name, prev.Lease); err != nil {
			return fmt.Errorf("vnet: attach %s to network %s: %w", p.Name, n.Name, err)
		}
	}
	if pr.Guard == nil && len(pr.Forwards) == 0 {
		pr.Firewall = ""
	}
	return m.Records.Write(portRecordName(n.Name, p.Name), &pr)
}

// parallel runs the functions at once and returns their errors, joined.
// They run in the caller's network namespace, also when the caller's thread
// was switched to another one than the rest of the process (as tests do):
// a goroutine that finds itself elsewhere moves to it, on a thread it never
// unlocks, which Go then discards rather than reuse.
func parallel(fns ...func() error) error {
	want, err := threadNetns()
	if err != nil {
		return err
	}
	callerTid := unix.Gettid()
	errs := make([]error, len(fns))
	done := make(chan struct{}, len(fns))
	for i, fn := range fns {
		go func() {
			defer func() { done <- struct{}{} }()
			if here, err := threadNetns(); err != nil || here != want {
				runtime.LockOSThread()
				h, err := netns.GetFromThread(os.Getpid(), callerTid)
				if err == nil {
					err = netns.Set(h)
					h.Close()
				}
				if err != nil {
					errs[i] = fmt.Errorf("vnet: enter the caller's network namespace: %w", err)
					return
				}
			}
			errs[i] = fn()
		}()
	}
	for range fns {
		<-done
	}
	return errors.Join(errs...)
}

// threadNetns identifies the calling thread's network namespace.
func threadNetns() (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
		return 0, fmt.Errorf("vnet: network namespace: %w", err)
	}
	return st.Ino, nil
}

// unionForwards is a and the forwards of b not in a.
func unionForwards(a, b []Forward) []Forward {
	out := slices.Clone(a)
	for _, f := range b {
		if !slices.Contains(out, f) {
			out = append(out, f)
		}
	}
	return out
}

// withPortRule completes a port's spec with the network's first
// [[network.NAME.port]] rule matching its name and guest MAC: the rule gives
// what the caller did not (the guest's MAC, its addresses), and turns
// antispoof on when it asks for it. What the caller knows wins (a vif's mac
// and ip keys, a container's MAC and IPAM addresses), and a rule never turns
// off antispoof that the caller or the network asks for.
func withPortRule(n *config.Network, p PortRequest) PortRequest {
	r := n.PortRuleFor(p.Name, p.GuestMAC)
	if r == nil {
		return p
	}
	if p.GuestMAC == nil {
		p.GuestMAC = slices.Clone(r.MAC)
	}
	if len(p.IPs) == 0 {
		p.IPs = slices.Clone(r.IPs)
	}
	p.Antispoof = p.Antispoof || r.Antispoof
	return p
}

func validatePort(n *config.Network, p *PortRequest) error {
	if err := names.Interface(p.Name); err != nil {
		return fmt.Errorf("vnet: port: %w", err)
	}
	if p.Name == n.Bridge || p.Name == n.Uplink && n.Uplink != "" {
		return fmt.Errorf("vnet: port %s is network %s's own bridge or uplink", p.Name, n.Name)
	}
	for _, ip := range p.IPs {
		if err := validGuestAddr(n, ip); err != nil {
			return fmt.Errorf("vnet: port %s: %w", p.Name, err)
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
	return validateForwards(n, p)
}

// attachRouted sets up a port of a mode route network: up with its MTU and
// MAC, the network's gateway addresses as /32 and /128, proxy ARP, and a host
// route per guest address (Xen's vif-route).
func attachRouted(n *config.Network, p PortRequest, pr *portRecord) error {
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

// wantGuard is the port's antispoof, when the caller or the network asks
// for it: nil for none.
func wantGuard(n *config.Network, p PortRequest) *firewall.PortRules {
	// The network's antispoof setting guards every port whose guest's MAC and
	// addresses are known; a guest whose address comes later (DHCP) cannot be
	// pinned to it at attach, and is covered by the subnet check of the
	// network's forward rules instead.
	if !p.Antispoof && !(n.Antispoof && p.GuestMAC != nil && len(p.IPs) > 0) {
		return nil
	}
	return &firewall.PortRules{
		Network: n.Name,
		Port:    p.Name,
		MAC:     p.GuestMAC,
		IPs:     p.IPs,
		Bridged: n.Mode != config.ModeRoute,
	}
}

// backendFor is the firewall backend holding a network's port entries: the
// one its rules are in (mode bridge has none of its own: the configured kind).
func (m *Manager) backendFor(n *config.Network, rec *record) (firewall.Backend, error) {
	kind := rec.Backend
	if kind == "" {
		kind = n.Firewall
	}
	return m.NewFirewall(kind)
}

// portShaping is the policy for a port's limits: what the caller asked for,
// else the network's config for this port (per-guest rules, then defaults).
func (m *Manager) portShaping(n *config.Network, p PortRequest) config.PortShaping {
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
		return shape.RemovePortIn(port, n.Name)
	}
	return shape.ApplyPort(shape.PortLimits{
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
	if err := names.Interface(name); err != nil {
		return fmt.Errorf("vnet: port: %w", err)
	}
	l, err := m.lock(n.Name)
	if err != nil {
		return err
	}
	defer l.Release()
	pr := portRecord{Network: n.Name, Port: name, Bridge: n.Bridge}
	had, err := m.Records.Read(portRecordName(n.Name, name), &pr)
	if err != nil {
		return err
	}
	if err := m.undoPort(&pr); err != nil {
		return fmt.Errorf("vnet: detach %s from network %s: %w", name, n.Name, err)
	}
	if had {
		return m.Records.Remove(portRecordName(n.Name, name))
	}
	return nil
}

// undoPort removes what Attach gave a port, as its record says: antispoof
// rules, shaping, routes and addresses, its place on our bridge (a port that
// someone moved to another bridge stays there). Whatever is already gone is
// not an error.
func (m *Manager) undoPort(pr *portRecord) error {
	if pr.Owned {
		return m.undoOwnedPort(pr)
	}
	var errs []error
	errs = append(errs, m.removeGuard(pr), m.unpublish(pr), shape.RemovePortIn(pr.Port, pr.Network), m.unclaim(pr), m.forgetOverlayGuest(pr))
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
	// The MAC first: IPv6 coming back on derives the port's link-local
	// address from the MAC it has then.
	if mac, err := net.ParseMAC(pr.OldMAC); err == nil {
		errs = append(errs, link.Restore(pr.Port, pr.OldMTU, mac))
	}
	if pr.IPv6Off {
		_, err := link.SetIPv6(pr.Port, true)
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// unclaim gives the port's addresses back to the allocator.
func (m *Manager) unclaim(pr *portRecord) error {
	if !pr.Claimed {
		return nil
	}
	return m.Release(pr.Network, pr.Port)
}

// undoOwnedPort undoes a port whose device Attach's caller created for it:
// the device goes first (its bridge membership, qdiscs, filters, routes and
// addresses go with it, and nothing reaches the guest any more), then what
// outlives it. Deleting links and nf_tables set elements each wait for an
// RCU grace period in the kernel, so the independent parts run at once.
func (m *Manager) undoOwnedPort(pr *portRecord) error {
	return parallel(
		func() error {
			// The device and its ifb in one kernel batch; then the port's
			// classes in the network's aggregates, which outlive both.
			gone := []string{pr.Port}
			if ifb, err := link.Get(shape.PortIfb(pr.Port)); err == nil && ifb.Type() == "ifb" {
				gone = append(gone, ifb.Attrs().Name)
			}
			return errors.Join(link.DeleteAll(gone...), shape.ForgetPort(pr.Port, pr.Network))
		},
		func() error { return errors.Join(m.removeGuard(pr), m.forgetOverlayGuest(pr)) },
		func() error { return m.unpublish(pr) },
		func() error {
			if pr.Lease == "" {
				return m.unclaim(pr)
			}
			return errors.Join(m.removeStaticLease(pr.Network, pr.Lease), m.unclaim(pr))
		},
	)
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
	if pr.Firewall == "" || pr.V >= 2 && pr.Guard == nil {
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
	names, err := m.Records.List(portDir(n.Name))
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
		if ok, err := m.Records.Read(name, &pr); err != nil || !ok {
			errs = append(errs, err)
			continue
		}
		if err := m.undoPort(&pr); err != nil {
			errs = append(errs, err)
			continue
		}
		errs = append(errs, m.Records.Remove(name))
	}
	return errors.Join(errs...)
}

// DetachPort detaches a port by name from whichever network it was attached
// to, as recorded. Hooks whose callers only know the device (Xen's offline,
// QEMU's ifdown) use it. A port with no record has its shaping removed, in
// case an earlier attach died before recording it, and is otherwise left alone.
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
		var pr portRecord
		ok, err := m.Records.Read(portRecordName(network, name), &pr)
		if err != nil || !ok {
			// An Attach killed before its first record write may have
			// left that write's temp file.
			_ = m.Records.Remove(portRecordName(network, name))
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
		if err := shape.RemovePortIn(name, ""); err != nil {
			return fmt.Errorf("vnet: detach %s: %w", name, err)
		}
	}
	return nil
}

// portNetworks lists the networks that have port records.
func (m *Manager) portNetworks() ([]string, error) {
	ents, err := os.ReadDir(filepath.Join(m.Records.Dir, "ports"))
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
