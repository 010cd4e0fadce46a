package vnet

import (
	"errors"
	"net"

	"github.com/brouter/brouter/shared/config"
	"github.com/brouter/brouter/shared/firewall"
	"github.com/brouter/brouter/shared/link"
	"github.com/brouter/brouter/shared/shape"
)

// A port's own state, besides its device: its addresses claimed from the
// allocator, its shaping, its antispoof guard, its published ports and its
// static DHCP lease. Attach installs it before the port joins the network,
// so the guest's first frame already meets it; undoPort removes it.

// install puts the port's own state in place, as planned.
func (a *attachment) install() error {
	m, n, p := a.m, a.n, a.p
	if a.pr.Claimed {
		if err := m.claimAddrs(n, p.Name, p.IPs); err != nil {
			return err
		}
	}
	// The port's shaping, antispoof entries, published ports and lease are
	// independent, and each waits on the kernel (an ifb's creation, an
	// nf_tables commit) or on dnsmasq: those it has are set up at once.
	steps := []func() error{a.installShaping}
	if a.guard != nil || a.reattach && a.prev.Firewall != "" {
		steps = append(steps, a.installGuard)
	}
	if a.fw != nil && (len(p.Forwards) > 0 || len(a.prev.Forwards) > 0) {
		steps = append(steps, a.installForwards)
	}
	if n.DHCP != nil && p.GuestMAC != nil || a.prev.Lease != "" {
		steps = append(steps, a.installLease)
	}
	var err error
	if len(steps) == 1 {
		err = steps[0]()
	} else {
		err = parallel(steps...)
	}
	if err != nil {
		return err
	}
	// A local guest of a network spanning hosts (overlay.go).
	return m.attachOverlayGuest(n, &a.net, &a.pr, &a.prev)
}

func (a *attachment) installShaping() error {
	n, p := a.n, a.p
	sh := portShaping(n, p)
	// A device made for this attachment has no shaping to remove.
	if !a.reattach && p.Owned && sh.IsZero() && n.Shaping == nil {
		return nil
	}
	return a.m.withShapingLock(n.Name, a.pr.Aggregate, func() error {
		return a.m.applyShaping(n, p.Name, sh)
	})
}

func (a *attachment) installGuard() error {
	switch {
	case a.guard != nil:
		return a.fw.EnsurePort(*a.guard)
	case a.reattach && a.prev.Firewall != "":
		return a.m.removeGuard(&a.prev)
	}
	return nil
}

func (a *attachment) installForwards() error {
	if a.fw == nil {
		return nil
	}
	return a.m.publish(a.n, &a.net, a.fw, a.p.Name, a.p.Forwards, a.prev.Forwards)
}

func (a *attachment) installLease() error {
	lease, err := a.m.staticLease(a.n, a.p)
	// Recorded whatever happened: a lease written before a failure is undone.
	a.pr.Lease = lease
	if err != nil {
		return err
	}
	if a.reattach && a.prev.Lease != "" && a.prev.Lease != lease {
		return a.m.removeStaticLease(a.n.Name, a.prev.Lease)
	}
	return nil
}

// wantGuard is the port's antispoof, when the caller or the network asks
// for it: nil for none.
func wantGuard(n *config.Network, p PortRequest) *firewall.PortRules {
	// The network's antispoof setting guards every port whose guest's MAC and
	// addresses are known; a guest whose address comes later (DHCP) cannot be
	// pinned to it at attach, and is covered by the subnet check of the
	// network's forward rules instead. Its port still gets the service
	// guard: it may not act as the network's DHCP server or router.
	if !p.Antispoof && !(n.Antispoof && p.GuestMAC != nil && len(p.IPs) > 0) {
		if n.Antispoof {
			return &firewall.PortRules{Network: n.Name, Port: p.Name, Bridged: n.Mode != config.ModeRoute, ServiceOnly: true}
		}
		return nil
	}
	return &firewall.PortRules{
		Network: n.Name,
		Port:    p.Name,
		MAC:     p.GuestMAC,
		IPs:     withSLAAC(n, p.GuestMAC, p.IPs),
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
	return m.firewall(kind)
}

// portShaping is the policy for a port's limits: what the caller asked for,
// else the network's config for this port (per-guest rules, then defaults).
func portShaping(n *config.Network, p PortRequest) config.PortShaping {
	conf := n.Shaping.ForPort(p.Name, p.GuestMAC)
	if p.Shaping == nil {
		return conf
	}
	sh := *p.Shaping
	sh.Priority = conf.Priority // callers give rates; priority is the host's policy
	return sh
}

// applyShaping puts the port's limits in place, or removes them when there are none.
func (m *Manager) applyShaping(n *config.Network, port string, sh config.PortShaping) error {
	if sh.IsZero() && !hasAggregate(n) {
		return m.Shaper.RemovePort(port, n.Name)
	}
	return m.Shaper.ApplyPort(shape.PortLimits{
		Port:      port,
		ToGuest:   shape.Limit{Rate: sh.ToGuest, Burst: sh.ToGuestBurst},
		FromGuest: shape.Limit{Rate: sh.FromGuest, Burst: sh.FromGuestBurst},
		Priority:  sh.Priority,
		Network:   n.Name,
	})
}

// undoPort removes what Attach gave a port, as its record says: antispoof
// rules, shaping, routes and addresses, its place on our bridge (a port that
// someone moved to another bridge stays there). Whatever is already gone is
// not an error.
func (m *Manager) undoPort(pr *portRecord) error {
	if pr.Owned {
		return m.undoOwnedPort(pr)
	}
	errs := []error{m.removeGuard(pr), m.unpublish(pr), m.removeShaping(pr), m.unclaim(pr),
		m.forgetOverlayGuest(pr), undoNDProxies(pr.NDProxy)}
	if pr.Lease != "" {
		errs = append(errs, m.removeStaticLease(pr.Network, pr.Lease))
	}
	errs = append(errs, m.leave(pr))
	return errors.Join(errs...)
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
			if ifb, err := m.Links.Device(shape.PortIfb(pr.Port)); err == nil && ifb.Kind == "ifb" {
				gone = append(gone, ifb.Name)
			}
			return errors.Join(m.Links.DeleteAll(gone...), m.withShapingLock(pr.Network, pr.inAggregate(), func() error {
				return m.Shaper.ForgetPort(pr.Port, pr.Network)
			}))
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

func (m *Manager) removeShaping(pr *portRecord) error {
	return m.withShapingLock(pr.Network, pr.inAggregate(), func() error {
		return m.Shaper.RemovePort(pr.Port, pr.Network)
	})
}

func (m *Manager) removeGuard(pr *portRecord) error {
	if pr.Firewall == "" || pr.V >= 2 && pr.Guard == nil {
		return nil
	}
	fw, err := m.firewall(pr.Firewall)
	if err != nil {
		return err
	}
	return fw.RemovePort(pr.Network, pr.Port)
}

// unclaim gives the port's addresses back to the allocator.
func (m *Manager) unclaim(pr *portRecord) error {
	if !pr.Claimed {
		return nil
	}
	return m.Release(pr.Network, pr.Port)
}

// leave undoes what joining the network did to the port's device; nothing
// when the device is gone (its routes and addresses went with it).
func (m *Manager) leave(pr *portRecord) error {
	port, err := m.Links.Device(pr.Port)
	if errors.Is(err, link.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	errs := []error{m.undoRouted(pr)}
	if pr.Bridge != "" && port.Master == pr.Bridge {
		errs = append(errs, m.Links.Detach(pr.Port))
	}
	if pr.SetUp {
		errs = append(errs, m.Links.SetDown(pr.Port)) // as Xen's vif scripts do on offline
	}
	// The MAC first: IPv6 coming back on derives the port's link-local
	// address from the MAC it has then.
	if mac, err := net.ParseMAC(pr.OldMAC); err == nil {
		errs = append(errs, m.Links.Restore(pr.Port, pr.OldMTU, mac))
	}
	if pr.IPv6Off {
		_, err := m.Links.SetIPv6(pr.Port, true)
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// firewall is NewFirewall's backend of kind, made once per Manager: making
// one probes the host (the iptables backend runs iptables three times).
// Backends are safe for concurrent use.
func (m *Manager) firewall(kind string) (firewall.Backend, error) {
	m.fwMu.Lock()
	defer m.fwMu.Unlock()
	if b, ok := m.fws[kind]; ok {
		return b, nil
	}
	b, err := m.NewFirewall(kind)
	if err != nil {
		return nil, err
	}
	if m.fws == nil {
		m.fws = map[string]firewall.Backend{}
	}
	m.fws[kind] = b
	return b, nil
}
