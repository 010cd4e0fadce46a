package vnet

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/brouter/brouter/shared/config"
	"github.com/brouter/brouter/shared/dhcp"
	"github.com/brouter/brouter/shared/firewall"
	"github.com/brouter/brouter/shared/link"
)

// Reconcile makes the kernel match the records of running network n again,
// after another tool changed it behind brouter's back: a flushed ruleset
// (nftables.service or firewalld reloading, `iptables -F`), Docker rebuilding
// DOCKER-USER, a dead dnsmasq, a deleted bridge; and a port whose device is
// gone without a detach (a QEMU guest killed with SIGKILL never runs
// qemu-ifdown, a Xen domain destroyed by force) is detached as if its caller
// had asked. It returns one line per repair. Idempotent: when nothing is
// missing it changes nothing, and costs a look at the kernel and the records.
// A network that is not running is left alone.
func (m *Manager) Reconcile(n *config.Network) ([]string, error) {
	var rec record
	had, err := m.Records.Read(recordName(n.Name), &rec)
	if err != nil || !had {
		return nil, err
	}
	var repairs []string
	ports, err := m.portsByAge(n.Name)
	if err != nil {
		return nil, err
	}
	// Vanished ports first: a network-wide repair then has less to re-apply.
	var live []string
	for _, name := range ports {
		gone, err := m.detachVanished(n, name)
		if err != nil {
			return repairs, fmt.Errorf("vnet: reconcile network %s: %w", n.Name, err)
		}
		if !gone {
			live = append(live, name)
			continue
		}
		repairs = append(repairs, fmt.Sprintf("port %s: its device is gone; detached (records, antispoof, published ports, shaping, lease)", name))
	}
	if n.Mode == config.ModeBridge {
		return repairs, nil // not our bridge, nor our rules: nothing else to mend
	}
	problems, err := m.problems(n, &rec)
	if err != nil || len(problems) == 0 {
		return repairs, err
	}
	if running, err := m.start(n, true); err != nil || !running {
		// Not running any more: stopped since the look above.
		return repairs, err
	}
	for _, p := range problems {
		what, _ := splitFix(p)
		repairs = append(repairs, "repaired: "+what)
	}
	// The network's rules are back; its ports' own entries (antispoof set
	// elements, published ports) and their place on a recreated bridge may
	// have gone with them.
	for _, name := range live {
		if err := m.reapplyPort(n, name); err != nil {
			return repairs, fmt.Errorf("vnet: reconcile network %s: %w", n.Name, err)
		}
	}
	if len(live) > 0 {
		repairs = append(repairs, fmt.Sprintf("re-applied the per-port state of %d ports (%s)", len(live), strings.Join(live, " ")))
	}
	return repairs, nil
}

// reapplyPort installs again, from its record, what Attach gave a port that
// a network-wide repair may have lost: its antispoof entries, its published
// ports, its place on the bridge.
func (m *Manager) reapplyPort(n *config.Network, name string) error {
	l, err := m.lock(n.Name)
	if err != nil {
		return err
	}
	defer l.Release()
	var pr portRecord
	had, err := m.Records.Read(portRecordName(n.Name, name), &pr)
	if err != nil || !had {
		return err
	}
	var errs []error
	if pr.Firewall != "" {
		fw, err := m.NewFirewall(pr.Firewall)
		if err != nil {
			return err
		}
		if g := pr.Guard; g != nil && g.MAC != "" {
			errs = append(errs, fw.EnsurePort(guardRules(n.Name, name, g)))
		}
		if len(pr.Forwards) > 0 {
			var rec record
			if _, err := m.Records.Read(recordName(n.Name), &rec); err != nil {
				return err
			}
			errs = append(errs, fw.EnsureForwards(forwardRules(n, &rec, name, pr.Forwards)))
		}
	}
	if pr.Bridge != "" {
		errs = append(errs, m.rejoinBridge(&pr))
	}
	return errors.Join(errs...)
}

// rejoinBridge puts a port back on its bridge when the bridge was recreated
// (its ports fell off with it).
func (m *Manager) rejoinBridge(pr *portRecord) error {
	port, err := link.Get(pr.Port)
	if err != nil {
		return err
	}
	br, err := link.Get(pr.Bridge)
	if err != nil {
		return err
	}
	if port.Attrs().MasterIndex == br.Attrs().Index {
		return nil
	}
	return link.Attach(link.AttachSpec{Name: pr.Port, Bridge: pr.Bridge, Hairpin: len(pr.Forwards) > 0})
}

// guardRules is a port's antispoof as its record has it.
func guardRules(network, port string, g *guardRecord) firewall.PortRules {
	p := firewall.PortRules{Network: network, Port: port, IPs: g.IPs, Bridged: g.Bridged}
	p.MAC, _ = net.ParseMAC(g.MAC)
	return p
}

// detachVanished detaches port name of network n, as Detach would, if its
// device is gone (looked at again under the lock: a device of that name may
// have come back and been attached anew). It reports whether it did.
func (m *Manager) detachVanished(n *config.Network, name string) (bool, error) {
	if ok, err := link.Exists(name); err != nil || ok {
		return false, err
	}
	l, err := m.lock(n.Name)
	if err != nil {
		return false, err
	}
	defer l.Release()
	var pr portRecord
	had, err := m.Records.Read(portRecordName(n.Name, name), &pr)
	if err != nil || !had {
		return false, err
	}
	if ok, err := link.Exists(name); err != nil || ok {
		return false, err
	}
	if err := m.undoPort(&pr); err != nil {
		return false, err
	}
	return true, m.Records.Remove(portRecordName(n.Name, name))
}

// portsByAge lists the network's recorded ports in the order they were
// attached (a repair re-applies them in that order, so per-port jumps of
// the iptables backend come back in their order).
func (m *Manager) portsByAge(network string) ([]string, error) {
	names, err := m.Ports(network)
	if err != nil {
		return nil, err
	}
	at := map[string]time.Time{}
	for _, name := range names {
		var pr portRecord
		if ok, err := m.Records.Read(portRecordName(network, name), &pr); err == nil && ok {
			at[name] = pr.Attached
		}
	}
	sort.SliceStable(names, func(i, j int) bool { return at[names[i]].Before(at[names[j]]) })
	return names, nil
}

// problems is what of network n's Start is missing from the kernel, each a
// line of Status' problems: the bridge and its addresses, the firewall
// backend's Check of the network's rules, a dead dnsmasq. It is Status'
// check without Status' descriptions (every port's shaping, the rules'
// text), so a reconcile that finds nothing costs little.
func (m *Manager) problems(n *config.Network, rec *record) ([]string, error) {
	var out []string
	if n.Mode != config.ModeRoute {
		br, err := link.Get(rec.Bridge)
		switch {
		case errors.Is(err, link.ErrNotFound):
			out = append(out, "bridge "+rec.Bridge+" is missing (deleted behind our back?); run start again")
		case err != nil:
			return nil, fmt.Errorf("vnet: %w", err)
		default:
			have, err := link.Addrs(br)
			if err != nil {
				return nil, fmt.Errorf("vnet: %w", err)
			}
			for _, want := range rec.Addresses {
				if p, err := netip.ParsePrefix(want); err == nil && !slices.Contains(have, p) {
					out = append(out, "address "+want+" is missing from "+rec.Bridge+"; run start again")
				}
			}
		}
	}
	if rec.Backend != "" {
		fw, err := m.NewFirewall(rec.Backend)
		if err != nil {
			return nil, err
		}
		p, err := fw.Check(rulesFor(n))
		if err != nil {
			// A check that cannot even read the rules (a chain gone
			// under the iptables tool's feet) is a problem to repair.
			p = []string{err.Error()}
		}
		out = append(out, p...)
	}
	if n.DHCP != nil {
		run, _ := m.dhcpDirs(n.Name)
		if _, ok := dhcp.Running(n.Name, run); !ok {
			out = append(out, fmt.Sprintf("dnsmasq of network %s is not running (it died?); run start to restart it", n.Name))
		}
	}
	return out, nil
}
