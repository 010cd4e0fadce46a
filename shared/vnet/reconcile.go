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
	"github.com/brouter/brouter/shared/shape"
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
	masters, err := linkMasters()
	if err != nil {
		return nil, err
	}
	// Vanished ports first: a network-wide repair then has less to re-apply.
	var live []string
	for _, name := range ports {
		if _, ok := masters[name]; ok {
			live = append(live, name)
			continue
		}
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
	if err := m.reapplyPorts(n, live); err != nil {
		return repairs, fmt.Errorf("vnet: reconcile network %s: %w", n.Name, err)
	}
	if len(live) > 0 {
		repairs = append(repairs, fmt.Sprintf("re-applied the per-port state of %d ports (%s)", len(live), strings.Join(live, " ")))
	}
	return repairs, nil
}

// reapplyPorts installs again, from their records, what Attach gave the
// ports that a network-wide repair may have lost: their antispoof entries
// (all in one go, trusting nothing the firewall backend remembers), their
// published ports, their place on a recreated bridge.
func (m *Manager) reapplyPorts(n *config.Network, ports []string) error {
	l, err := m.lock(n.Name)
	if err != nil {
		return err
	}
	defer l.Release()
	var rec record
	if _, err := m.Records.Read(recordName(n.Name), &rec); err != nil {
		return err
	}
	masters, err := linkMasters()
	if err != nil {
		return err
	}
	guards := map[string][]firewall.PortRules{} // by backend
	var errs []error
	for _, name := range ports {
		var pr portRecord
		had, err := m.Records.Read(portRecordName(n.Name, name), &pr)
		if err != nil || !had {
			errs = append(errs, err)
			continue
		}
		if g := pr.Guard; pr.Firewall != "" && g != nil && (g.MAC != "" || g.Service) {
			guards[pr.Firewall] = append(guards[pr.Firewall], guardRules(n.Name, name, g))
		}
		if pr.Firewall != "" && len(pr.Forwards) > 0 {
			fw, err := m.NewFirewall(pr.Firewall)
			if err != nil {
				return err
			}
			errs = append(errs, fw.EnsureForwards(forwardRules(n, &rec, name, pr.Forwards)))
		}
		if pr.Bridge != "" && masters[pr.Port] != pr.Bridge {
			// The bridge was recreated: its ports fell off with it, and
			// with their bridge port flags.
			err := link.Attach(link.AttachSpec{Name: pr.Port, Bridge: pr.Bridge, Hairpin: len(pr.Forwards) > 0})
			if err == nil && pr.Isolated {
				err = link.SetIsolated(pr.Port, true)
			}
			errs = append(errs, err)
		}
	}
	for kind, g := range guards {
		fw, err := m.NewFirewall(kind)
		if err != nil {
			return err
		}
		errs = append(errs, fw.SyncPorts(n.Name, g))
	}
	return errors.Join(errs...)
}

// linkMasters maps every link's name to its master's ("" for none): one
// dump of the links.
func linkMasters() (map[string]string, error) {
	links, err := link.List()
	if err != nil {
		return nil, fmt.Errorf("vnet: %w", err)
	}
	byIndex := map[int]string{}
	for _, l := range links {
		byIndex[l.Attrs().Index] = l.Attrs().Name
	}
	out := map[string]string{}
	for _, l := range links {
		out[l.Attrs().Name] = byIndex[l.Attrs().MasterIndex]
	}
	return out, nil
}

// guardRules is a port's antispoof as its record has it.
func guardRules(network, port string, g *guardRecord) firewall.PortRules {
	p := firewall.PortRules{Network: network, Port: port, IPs: g.IPs, Bridged: g.Bridged, ServiceOnly: g.Service}
	if !g.Service {
		p.MAC, _ = net.ParseMAC(g.MAC)
	}
	return p
}

// detachVanished detaches port name of network n, as Detach would, if its
// device is gone (looked at again under the lock: a device of that name may
// have come back and been attached anew). It removes what outlived the
// device and never touches a device by that name: a new one may appear
// meanwhile (the bridge helper makes its taps before it takes the lock).
// It reports whether it did.
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
	if err := m.forgetVanished(&pr); err != nil {
		return false, err
	}
	return true, m.Records.Remove(portRecordName(n.Name, name))
}

// forgetVanished removes what a port's record lists that outlives its
// device: antispoof entries, published ports, the shaping's ifb and
// aggregate classes, the static lease, the claimed addresses.
func (m *Manager) forgetVanished(pr *portRecord) error {
	errs := []error{m.removeGuard(pr), m.unpublish(pr), m.unclaim(pr), shape.ForgetPort(pr.Port, pr.Network)}
	if pr.Lease != "" {
		errs = append(errs, m.removeStaticLease(pr.Network, pr.Lease))
	}
	return errors.Join(errs...)
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
		p, err := fw.Check(m.networkRules(n))
		if err != nil {
			// A check that cannot even read the rules (a chain gone
			// under the iptables tool's feet) is a problem to repair.
			p = []string{err.Error()}
		}
		out = append(out, p...)
	}
	_, overlay := m.overlayStatus(n, rec)
	out = append(out, overlay...)
	if n.DHCP != nil {
		run, _ := m.dhcpDirs(n.Name)
		if _, ok := dhcp.Running(n.Name, run); !ok {
			out = append(out, fmt.Sprintf("dnsmasq of network %s is not running (it died?); run start to restart it", n.Name))
		}
	}
	return out, nil
}
