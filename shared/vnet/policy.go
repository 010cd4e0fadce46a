package vnet

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/brouter/brouter/shared/config"
	"github.com/brouter/brouter/shared/firewall"
	"github.com/brouter/brouter/shared/link"
)

// Network policy (config.Policy): everything but isolation is network
// rules and forwards, derived from the config (and the records of ad-hoc
// networks) and installed by Start, so that starting again, or a
// reconcile, re-applies all of it; isolation is a flag of each guest port,
// set by Attach (and brought in line by Start for the recorded ports).

// networkRules is the network's rules in the firewall's terms: its mode's
// and its policy's.
func (m *Manager) networkRules(n *config.Network) firewall.NetworkRules {
	r := rulesFor(n)
	if n.Mode == config.ModeBridge {
		return r // not routed by brouter: no rules
	}
	p := n.Policy
	r.Policy = firewall.Policy{
		HostServicesOnly: p.HostAccess == config.HostAccessServices,
		HostServices:     firewallMatches(p.HostServices),
		Peers:            m.peers(n),
		Outgoing:         firewall.Filter{Deny: p.Outgoing.Deny, Rules: firewallMatches(p.Outgoing.Rules)},
		Incoming:         firewall.Filter{Deny: p.Incoming.Deny, Rules: firewallMatches(p.Incoming.Rules)},
	}
	m.tunnelPeers(n, r.Overlay)
	return r
}

// tunnelPeers adds to o the peers of the host's other overlays in clear on
// the same UDP port: every network's table admits VXLAN on that port from
// the peers it knows only, so each must know all of them (the kernel tells
// the networks apart by the VNI).
func (m *Manager) tunnelPeers(n *config.Network, o *firewall.OverlayRules) {
	if o == nil || o.UDPPort == 0 {
		return
	}
	for _, name := range sortedNetworks(m.Config) {
		other := m.Config.Networks[name]
		if name == n.Name || other.Overlay == nil || other.Overlay.Encrypted() || other.Overlay.VXLANPort() != o.UDPPort {
			continue
		}
		for _, p := range other.Overlay.Peers {
			if !slices.Contains(o.Peers, p.Address) {
				o.Peers = append(o.Peers, p.Address)
			}
		}
	}
}

func firewallMatches(l []config.Match) []firewall.Match {
	var out []firewall.Match
	for _, m := range l {
		out = append(out, firewall.Match{Allow: m.Allow, Proto: m.Proto, PortLo: m.Ports.Lo, PortHi: m.Ports.Hi, From: m.From, To: m.To})
	}
	return out
}

// peers are the host's other networks brouter routes for (modes nat,
// routed, isolated and route; a mode bridge network's guests are on the
// LAN, as outside as any other host): those of the config, which is
// host-wide, and the running ad-hoc ones (CNI networks of a bridge no
// [network.NAME] names), from their records.
func (m *Manager) peers(n *config.Network) []firewall.Peer {
	var out []firewall.Peer
	add := func(name, bridge string, subnets []netip.Prefix, reached bool) {
		if name == n.Name || len(subnets) == 0 || bridge != "" && bridge == n.Bridge {
			return
		}
		out = append(out, firewall.Peer{Network: name, Bridge: bridge, Subnets: subnets,
			Reach: slices.Contains(n.Policy.Reach, name), Reached: reached})
	}
	for _, name := range sortedNetworks(m.Config) {
		o := m.Config.Networks[name]
		if o.Mode != config.ModeBridge {
			add(name, o.Bridge, o.Subnets(), slices.Contains(o.Policy.Reach, n.Name))
		}
	}
	files, _ := m.Records.List("networks") // no records: no ad-hoc networks
	for _, f := range files {
		name, ok := strings.CutSuffix(f, ".json")
		if _, configured := m.Config.Networks[name]; !ok || configured || name == n.Name {
			continue
		}
		var rec record
		if ok, err := m.Records.Read(recordName(name), &rec); err != nil || !ok || rec.Mode == string(config.ModeBridge) {
			continue
		}
		var subnets []netip.Prefix
		for _, s := range rec.Addresses {
			if p, err := netip.ParsePrefix(s); err == nil {
				subnets = append(subnets, p.Masked())
			}
		}
		add(name, rec.Bridge, subnets, false)
	}
	return out
}

func sortedNetworks(c *config.Config) []string {
	names := make([]string, 0, len(c.Networks))
	for name := range c.Networks {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}

// networkForwards are the network's [[network.NAME.forward]], one per host port.
func networkForwards(n *config.Network) []Forward {
	var out []Forward
	for _, f := range n.Policy.Forwards {
		for i := 0; i < f.HostPorts.Size(); i++ {
			out = append(out, Forward{Proto: f.Proto, HostIP: f.HostIP, HostPort: f.HostPorts.Lo + uint16(i),
				GuestIP: f.GuestIP, GuestPort: f.GuestPort + uint16(i)})
		}
	}
	return out
}

// forwardsRecord is what a network's forwards are, as installed: a record
// of its own, so that attaching a port (which reads the network's record)
// costs the same with any number of forwards.
type forwardsRecord struct {
	Bridge   string    `json:"bridge"` // the owner key of the entries
	Forwards []Forward `json:"forwards"`
}

func forwardsRecordName(network string) string { return "forwards/" + network + ".json" }

// startForwards makes the network's forwards the config's: host ports
// claimed host-wide (as a container's published ports are) and DNAT entries
// installed, those no longer configured removed. The network owns them
// under its bridge's name, which no guest port can have. The record says
// what was installed; while they change, what may be.
func (m *Manager) startForwards(n *config.Network, rec *record, fw firewall.Backend) error {
	var fr forwardsRecord
	if _, err := m.Records.Read(forwardsRecordName(n.Name), &fr); err != nil {
		return err
	}
	want, had := networkForwards(n), fr.Forwards
	if len(want) == 0 && len(had) == 0 {
		return m.Records.Remove(forwardsRecordName(n.Name))
	}
	fr = forwardsRecord{Bridge: rec.Bridge, Forwards: unionForwards(had, want)}
	if err := m.Records.Write(forwardsRecordName(n.Name), &fr); err != nil {
		return err
	}
	if err := m.publish(n, rec, fw, rec.Bridge, want, had); err != nil {
		// The claims of this attempt go; what was installed before stays
		// claimed and recorded (Stop removes all the entries anyway).
		fresh := slices.DeleteFunc(slices.Clone(want), func(f Forward) bool { return slices.Contains(had, f) })
		if !strings.HasPrefix(err.Error(), "vnet: ") { // the firewall's
			err = fmt.Errorf("vnet: network %s: forwards: %w", n.Name, err)
		}
		errs := []error{err, m.releaseHostPorts(n.Name, rec.Bridge, rec.Bridge, fresh)}
		if fr.Forwards = had; len(had) == 0 {
			errs = append(errs, m.Records.Remove(forwardsRecordName(n.Name)))
		} else {
			errs = append(errs, m.Records.Write(forwardsRecordName(n.Name), &fr))
		}
		return errors.Join(errs...)
	}
	if len(want) == 0 {
		return m.Records.Remove(forwardsRecordName(n.Name))
	}
	fr.Forwards = want
	return m.Records.Write(forwardsRecordName(n.Name), &fr)
}

// stopForwards releases the host ports of the network's forwards (Stop
// removes their firewall entries with the network's) and their record.
func (m *Manager) stopForwards(network string) error {
	var fr forwardsRecord
	if _, err := m.Records.Read(forwardsRecordName(network), &fr); err != nil {
		return err
	}
	if err := m.releaseHostPorts(network, fr.Bridge, fr.Bridge, fr.Forwards); err != nil {
		return err
	}
	return m.Records.Remove(forwardsRecordName(network))
}

// forwardOwner reports whether port is the owner key of network's own
// forwards (its bridge's name) while it has some, and names them.
func (m *Manager) forwardOwner(network, port string) (string, bool) {
	var fr forwardsRecord
	if ok, err := m.Records.Read(forwardsRecordName(network), &fr); err != nil || !ok || fr.Bridge != port || len(fr.Forwards) == 0 {
		return "", false
	}
	return fmt.Sprintf("network %s ([[network.%s.forward]])", network, network), true
}

// isolatePort gives a bridged port the bridge port flag "isolated" when the
// network isolates its guests (the kernel then forwards nothing between two
// isolated ports; the gateway and whatever lies beyond are not a port), and
// takes it off a port that had it from an earlier attach. The flag goes with
// the port when it leaves the bridge.
func isolatePort(n *config.Network, port string, pr *portRecord, had bool) error {
	on := n.Policy.IsolateGuests
	if on || had {
		if err := link.SetIsolated(port, on); err != nil {
			return err
		}
	}
	pr.Isolated = on
	return nil
}

// syncIsolation brings the recorded ports of a started network in line
// with its isolate_guests (it may have changed since they were attached).
// The caller holds the network's lock.
func (m *Manager) syncIsolation(n *config.Network, rec *record) error {
	on := n.Policy.IsolateGuests
	if !on && !rec.IsolateGuests {
		return nil
	}
	files, err := m.Records.List(portDir(n.Name))
	if err != nil {
		return err
	}
	var errs []error
	for _, f := range files {
		if !strings.HasSuffix(f, ".json") {
			continue
		}
		var pr portRecord
		name := portDir(n.Name) + "/" + f
		if ok, err := m.Records.Read(name, &pr); err != nil || !ok || pr.Bridge == "" || pr.Isolated == on {
			continue
		}
		if err := isolatePort(n, pr.Port, &pr, true); err != nil {
			if !errors.Is(err, link.ErrNotFound) {
				errs = append(errs, fmt.Errorf("vnet: network %s: %w", n.Name, err))
			}
			continue
		}
		errs = append(errs, m.Records.Write(name, &pr))
	}
	rec.IsolateGuests = on
	return errors.Join(errs...)
}
