package shape

import (
	"fmt"
	"sort"
	"strings"

	"github.com/vishvananda/netlink"

	"github.com/brouter/brouter/shared/link"
)

// aggregateIfb returns the ifb of network's aggregate in direction d, looked
// up by its name; nil if there is none (or the name belongs to a link that is
// not an ifb, which is not brouter's).
func aggregateIfb(network string, d direction) (netlink.Link, error) {
	return ifbByName(netIfbName(network, d))
}

// leaveAggregate removes the port from network's aggregate in direction d, if
// there is one and the port is in it.
func leaveAggregate(network string, d direction, port string) error {
	ifb, err := aggregateIfb(network, d)
	if err != nil || ifb == nil {
		return err
	}
	return leaveNetwork(ifb, port)
}

// allAggregateIfbs lists the aggregate ifbs of all networks. It dumps every
// link of the host: only for RemovePort of a port whose network is unknown.
func allAggregateIfbs() ([]netlink.Link, error) {
	countHostDump()
	links, err := link.List()
	if err != nil {
		return nil, fmt.Errorf("shape: list links: %w", err)
	}
	var out []netlink.Link
	for _, l := range links {
		a := l.Attrs()
		if l.Type() == "ifb" && len(a.Name) == 15 && (strings.HasPrefix(a.Name, netToIfbPre) || strings.HasPrefix(a.Name, netFromIfbPr)) {
			out = append(out, l)
		}
	}
	return out, nil
}

// joinNetwork gives the port a class in the network ifb (or updates it) and
// returns the class minor.
func joinNetwork(ifb netlink.Link, port string, lim Limit, prio Priority) (uint32, error) {
	tags, err := listTags(ifb)
	if err != nil {
		return 0, err
	}
	classes, err := htbClasses(ifb)
	if err != nil {
		return 0, err
	}
	want := tagName(port, lim, prio)
	minor := uint32(0)
	used := map[uint32]bool{}
	for _, t := range tags {
		used[t.Handle] = true
		if p, ok := parseName(t.Name); ok && p.port == port {
			minor = t.Handle
			if t.Name == want {
				// Unchanged: still make sure its class is there.
				return minor, rebalance(ifb)
			}
		}
	}
	if minor == 0 {
		for h := range classes {
			if h>>16 == 1 {
				used[h&0xffff] = true
			}
		}
		for m := uint32(minMember); m <= maxMember; m++ {
			if !used[m] {
				minor = m
				break
			}
		}
		if minor == 0 {
			return 0, fmt.Errorf("shape: network ifb %s has no free class for port %s", ifb.Attrs().Name, port)
		}
	}
	if err := writeTag(ifb, minor, want); err != nil {
		return 0, err
	}
	return minor, rebalance(ifb)
}

// leaveNetwork removes the port's tag and class from a network ifb, if it has one there.
func leaveNetwork(ifb netlink.Link, port string) error {
	tags, err := listTags(ifb)
	if err != nil {
		return err
	}
	found := false
	for _, t := range tags {
		if p, ok := parseName(t.Name); ok && p.port == port {
			if err := delTag(ifb, t.Handle); err != nil {
				return err
			}
			found = true
		}
	}
	if !found {
		return nil
	}
	return rebalance(ifb)
}

// member of a network aggregate, as recorded by its tag.
type tagMember struct {
	minor uint32
	parsedName
}

func members(ifb netlink.Link) ([]tagMember, error) {
	tags, err := listTags(ifb)
	if err != nil {
		return nil, err
	}
	var out []tagMember
	for _, t := range tags {
		if p, ok := parseName(t.Name); ok && p.port != "" {
			out = append(out, tagMember{minor: t.Handle, parsedName: p})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].minor < out[j].minor })
	return out, nil
}

// rebalance recomputes the guaranteed rates of all members of a network ifb
// from its aggregate class and the members' tags, brings their classes and
// leaves to that, and removes classes no tag owns.
func rebalance(ifb netlink.Link) error {
	classes, err := htbClasses(ifb)
	if err != nil {
		return err
	}
	root := classes[aggClass]
	if root == nil {
		return fmt.Errorf("shape: network ifb %s has no aggregate class 1:1", ifb.Attrs().Name)
	}
	total := root.Ceil * 8
	ms, err := members(ifb)
	if err != nil {
		return err
	}
	in := make([]member, len(ms))
	ceils := make([]uint64, len(ms))
	for i, m := range ms {
		c := m.limit.Rate
		if c == 0 || c > total {
			c = total
		}
		ceils[i] = c
		in[i] = member{ceil: c, weight: m.prio.weight()}
	}
	rates := shares(total, in)
	owned := map[uint32]bool{}
	for i, m := range ms {
		h := netlink.MakeHandle(1, uint16(m.minor))
		owned[h] = true
		c := classSpec{
			handle: h, parent: aggClass,
			rate: rates[i], ceil: ceils[i],
			burst: AutoBurst(rates[i]), cburst: m.limit.burstOr(ceils[i]),
			prio: m.prio.htbPrio(), quantum: quantum(m.prio),
		}
		if err := ensureClass(ifb, classes, c); err != nil {
			return err
		}
		if err := ensureLeaf(ifb, h, m.minor<<16, ceils[i]); err != nil {
			return err
		}
	}
	for h, c := range classes {
		if c.Parent == aggClass && !owned[h] {
			if err := delClass(ifb, h); err != nil {
				return err
			}
		}
	}
	return nil
}

// ApplyNetwork sets the aggregate limits of a network: for each direction
// with a rate, an ifb with an HTB tree that member ports join when they are
// applied; a direction without a rate has no aggregate (its members go back
// to their own limits). Idempotent; validated before anything is touched; on
// a kernel error the network's previous aggregates are restored.
func ApplyNetwork(n NetworkSpec) error {
	if err := n.validate(); err != nil {
		return err
	}
	mu.Lock()
	defer mu.Unlock()
	prev, err := readNetwork(n.Network)
	if err != nil {
		return err
	}
	return undoOnError(applyNetwork(n), "aggregate", func() error { return applyNetwork(prev) })
}

// RemoveNetwork removes a network's aggregates; its members keep their own
// per-port limits. A network without aggregates is not an error.
func RemoveNetwork(network string) error {
	if err := validNetwork(network); err != nil {
		return err
	}
	mu.Lock()
	defer mu.Unlock()
	return applyNetwork(NetworkSpec{Network: network})
}

func applyNetwork(n NetworkSpec) error {
	for _, d := range directions {
		lim := n.limit(d)
		name := netIfbName(n.Network, d)
		if lim.Rate == 0 {
			if err := dissolve(n.Network, d); err != nil {
				return err
			}
			continue
		}
		ifb, created, err := ensureIfb(name, netAlias(n.Network, d, lim))
		if err == nil {
			err = ensureAggregate(ifb, lim)
		}
		if err != nil {
			if created && ifb != nil {
				_ = delLink(ifb)
			}
			return err
		}
	}
	return nil
}

func ensureAggregate(ifb netlink.Link, lim Limit) error {
	if err := ensureRootHTB(ifb, 0); err != nil {
		return err
	}
	classes, err := htbClasses(ifb)
	if err != nil {
		return err
	}
	b := lim.burstOr(lim.Rate)
	c := classSpec{handle: aggClass, parent: htbHandle, rate: lim.Rate, ceil: lim.Rate, burst: b, cburst: b, quantum: quantum(Medium)}
	if err := ensureClass(ifb, classes, c); err != nil {
		return err
	}
	return rebalance(ifb)
}

// dissolve removes a network's aggregate in one direction: its members that
// still exist get their own limits back, then the ifb goes.
func dissolve(network string, d direction) error {
	ifb, err := aggregateIfb(network, d)
	if err != nil || ifb == nil {
		return err
	}
	ms, err := members(ifb)
	if err != nil {
		return err
	}
	for _, m := range ms {
		l, err := linkByName(m.port)
		if err != nil {
			return err
		}
		if l == nil {
			continue
		}
		if err := applyDir(l, d, m.limit, m.prio, network, nil); err != nil {
			return err
		}
		if err := delClsactIfEmpty(l); err != nil {
			return err
		}
	}
	return delLink(ifb)
}

// readNetwork reads back a network's aggregates from the aliases of its ifbs.
func readNetwork(network string) (NetworkSpec, error) {
	n := NetworkSpec{Network: network}
	for _, d := range directions {
		ifb, err := aggregateIfb(network, d)
		if err != nil {
			return n, err
		}
		if ifb == nil {
			continue
		}
		p, ok := parseName(ifb.Attrs().Alias)
		if !ok || p.limit.Rate == 0 {
			continue
		}
		if d == toGuest {
			n.ToGuest = p.limit
		} else {
			n.FromGuest = p.limit
		}
	}
	return n, nil
}
