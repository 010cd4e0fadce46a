package vnet

import (
	"fmt"
	"slices"
	"time"

	"github.com/brouter/brouter/shared/config"
	"github.com/brouter/brouter/shared/firewall"
)

// attachment is one Attach under way: what it was asked, what it found,
// what it decided, and the port record it keeps up to date. Its steps, in
// Attach's order: plan (read and decide, change nothing), recordIntent,
// install (per-port state: claims, shaping, guard, forwards, lease), join
// (the bridge, or routes), recordDone; rollback on failure.
type attachment struct {
	m   *Manager
	n   *config.Network
	p   PortRequest
	net record // the network's record

	prev     portRecord // the port's record before this Attach
	reattach bool       // there was one: the port is attached already

	guard *firewall.PortRules // the port's antispoof (nil: none)
	fw    firewall.Backend    // the backend of its guard and forwards (nil: needs none)
	pr    portRecord          // the record being written
}

// plan reads the network's and the port's records and the port's device,
// and decides what the port gets. It changes nothing.
func (m *Manager) plan(n *config.Network, p PortRequest) (*attachment, error) {
	a := &attachment{m: m, n: n, p: p}
	had, err := m.Records.Read(recordName(n.Name), &a.net)
	if err != nil {
		return nil, err
	}
	if !had {
		return nil, fmt.Errorf("vnet: attach %s: network %s is not running; start it first (network-virtual start net=%s)", p.Name, n.Name, n.Name)
	}
	if a.prev, a.reattach, err = m.readPort(n.Name, p.Name); err != nil {
		return nil, err
	}
	pr := portRecord{V: portRecordVersion, Network: n.Name, Port: p.Name, Owned: p.Owned,
		Attached: time.Now().UTC(), Request: recordRequest(p), Aggregate: hasAggregate(n)}
	if n.Mode != config.ModeRoute {
		// Known from the start: published ports' route_localnet follows
		// the bridge's ports, also when a failed Attach takes them back.
		pr.Bridge = a.net.Bridge
	}
	if a.reattach {
		prev := &a.prev
		pr.SetUp, pr.OldMAC, pr.OldMTU = prev.SetUp, prev.OldMAC, prev.OldMTU
		pr.Owned = pr.Owned || prev.Owned
		pr.IPv6Off = prev.IPv6Off
		pr.Aggregate = pr.Aggregate || prev.inAggregate()
	} else if d, err := m.Links.Device(p.Name); err == nil {
		if err := m.guestDevice(n, d, a.net.Bridge); err != nil {
			return nil, invalidPort{fmt.Errorf("vnet: attach %s to network %s: %w", p.Name, n.Name, err)}
		}
		// What Attach changes, so that Detach can put it back.
		pr.SetUp = !d.Up // Xen's vifs come down; netback waits for us
		pr.OldMAC, pr.OldMTU = d.MAC.String(), d.MTU
	}

	// The firewall entries are decided before anything changes, and recorded
	// first: a crash midway leaves Detach a record of everything that may be
	// installed. A fresh port has nothing yet, so the record can tell the
	// firewall exactly what to remove; during a change it says "unknown".
	a.guard = wantGuard(n, p)
	if a.guard != nil || len(p.Forwards) > 0 || a.prev.Firewall != "" {
		if a.fw, err = m.backendFor(n, &a.net); err != nil {
			return nil, fmt.Errorf("vnet: attach %s to network %s: %w", p.Name, n.Name, err)
		}
		pr.Firewall = a.fw.Name()
	}
	if g := a.guard; g != nil {
		pr.Guard = &guardRecord{MAC: g.MAC.String(), IPs: g.IPs, Bridged: g.Bridged, Service: g.ServiceOnly}
	} else if a.reattach && a.prev.Firewall != "" && (a.prev.V < 2 || a.prev.Guard != nil) {
		pr.Guard = &guardRecord{} // being removed
	}
	pr.Forwards = p.Forwards
	if a.reattach {
		pr.Forwards = unionForwards(a.prev.Forwards, p.Forwards)
	}
	pr.Claimed = len(p.IPs) > 0 || a.reattach && a.prev.Claimed
	pr.Overlay = overlayGuestMAC(n, p)
	a.pr = pr
	return a, nil
}

// recordIntent writes the port's record before anything changes: it lists
// everything the following steps may install, so that Detach (or Stop)
// after a crash at any point removes it.
func (a *attachment) recordIntent() error { return a.m.writePort(&a.pr) }

// rollback undoes a failed Attach of a fresh port: everything its record
// lists, then the record (kept when something could not be undone, for
// Detach to finish). A failed re-attach keeps the port and its record.
func (a *attachment) rollback() {
	if a.reattach {
		return
	}
	if a.m.undoPort(&a.pr) == nil {
		_ = a.m.removePort(a.n.Name, a.p.Name)
	}
}

// recordDone writes the record of what the port now has.
func (a *attachment) recordDone() error {
	pr := &a.pr
	pr.Forwards = a.p.Forwards
	if a.guard == nil {
		pr.Guard = nil
	}
	if pr.Guard == nil && len(pr.Forwards) == 0 {
		pr.Firewall = ""
	}
	return a.m.writePort(pr)
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

// hasAggregate reports whether the network limits its guests together
// (aggregate shaping: ports join the network's classes).
func hasAggregate(n *config.Network) bool {
	return n.Shaping != nil && (n.Shaping.TotalToGuest != 0 || n.Shaping.TotalFromGuest != 0)
}
