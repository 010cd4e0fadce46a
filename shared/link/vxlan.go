package link

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// VxlanSpec says how a network's VXLAN device looks: a tunnel endpoint with
// no remote or group of its own (the flood list, SyncFlood, says where
// broadcast, unknown unicast and multicast go), learning which remote
// endpoint is behind each MAC, and a port of the network's bridge.
type VxlanSpec struct {
	Name   string
	VNI    uint32
	Local  netip.Addr // the tunnel's source address
	Port   uint16     // UDP destination port
	MTU    int
	Bridge string
}

// EnsureVxlan makes the VXLAN device of spec exist, with its MTU, on its
// bridge and up. A device of that name that is another kind of link, or a
// VXLAN device with another VNI, local address or port (which the kernel
// cannot change), is replaced; otherwise the device is kept, so its learnt
// entries and its place on the bridge survive. created says whether the
// device is new.
func EnsureVxlan(spec VxlanSpec) (l netlink.Link, created bool, err error) {
	l, err = Get(spec.Name)
	switch {
	case errors.Is(err, ErrNotFound):
	case err != nil:
		return nil, false, err
	default:
		if v, ok := l.(*netlink.Vxlan); ok && sameVxlan(v, spec) {
			break
		}
		if err := Delete(spec.Name); err != nil {
			return nil, false, err
		}
		l = nil
	}
	if l == nil {
		v := &netlink.Vxlan{LinkAttrs: netlink.NewLinkAttrs(), VxlanId: int(spec.VNI), SrcAddr: net.IP(spec.Local.AsSlice()),
			Port: int(spec.Port), Learning: true}
		v.Name, v.MTU = spec.Name, spec.MTU
		if err := netlink.LinkAdd(v); err != nil {
			return nil, false, fmt.Errorf("link: create VXLAN device %s (vni %d, local %s, port %d): %w", spec.Name, spec.VNI, spec.Local, spec.Port, err)
		}
		created = true
		if l, err = Get(spec.Name); err != nil {
			return nil, true, err
		}
	}
	if l.Attrs().MTU != spec.MTU {
		if err := netlink.LinkSetMTU(l, spec.MTU); err != nil {
			return l, created, fmt.Errorf("link: set MTU %d on %s: %w", spec.MTU, spec.Name, err)
		}
	}
	if err := Attach(AttachSpec{Name: spec.Name, Bridge: spec.Bridge, MTU: spec.MTU}); err != nil {
		return l, created, err
	}
	return l, created, nil
}

func sameVxlan(v *netlink.Vxlan, spec VxlanSpec) bool {
	local, _ := netip.AddrFromSlice(v.SrcAddr)
	return v.VxlanId == int(spec.VNI) && local.Unmap() == spec.Local && v.Port == int(spec.Port) && v.Learning
}

// zeroMAC keys the flood list: the all-zeros entries of a VXLAN device's
// forwarding database (head-end replication, as `bridge fdb append
// 00:00:00:00:00:00 dev VX dst PEER` makes them).
var zeroMAC = net.HardwareAddr{0, 0, 0, 0, 0, 0}

// Flood lists the remote endpoints in the device's flood list.
func Flood(name string) ([]netip.Addr, error) {
	l, err := Get(name)
	if err != nil {
		return nil, err
	}
	return flood(l)
}

func flood(l netlink.Link) ([]netip.Addr, error) {
	fdb, err := remoteFDB(l)
	if err != nil {
		return nil, err
	}
	var out []netip.Addr
	for _, n := range fdb {
		if bytes.Equal(n.HardwareAddr, zeroMAC) {
			out = append(out, remoteOf(n))
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out), nil
}

// remoteFDB lists the device's own forwarding entries that send to a
// remote endpoint: the flood list and the learnt MACs.
func remoteFDB(l netlink.Link) ([]netlink.Neigh, error) {
	neighs, err := redump(func() ([]netlink.Neigh, error) { return netlink.NeighList(l.Attrs().Index, unix.AF_BRIDGE) })
	if err != nil {
		return nil, fmt.Errorf("link: list the forwarding database of %s: %w", l.Attrs().Name, err)
	}
	var out []netlink.Neigh
	for _, n := range neighs {
		if n.LinkIndex == l.Attrs().Index && remoteOf(n).IsValid() {
			out = append(out, n)
		}
	}
	return out, nil
}

func remoteOf(n netlink.Neigh) netip.Addr {
	a, _ := netip.AddrFromSlice(n.IP)
	return a.Unmap()
}

// SyncFlood makes the device's flood list exactly dsts: entries for the
// endpoints missing are appended; those of endpoints no longer wanted are
// deleted, and so is every MAC learnt behind an endpoint not in dsts
// (unicast would go on reaching it); the others, and what is learnt behind
// them, are left alone. It returns the flood entries it added and removed.
func SyncFlood(name string, dsts []netip.Addr) (added, removed []netip.Addr, err error) {
	l, err := Get(name)
	if err != nil {
		return nil, nil, err
	}
	have, err := flood(l)
	if err != nil {
		return nil, nil, err
	}
	entry := func(a netip.Addr) *netlink.Neigh {
		return &netlink.Neigh{LinkIndex: l.Attrs().Index, Family: unix.AF_BRIDGE, State: netlink.NUD_NOARP | netlink.NUD_PERMANENT,
			Flags: netlink.NTF_SELF, IP: net.IP(a.AsSlice()), HardwareAddr: zeroMAC}
	}
	for _, a := range have {
		if !slices.Contains(dsts, a) {
			removed = append(removed, a)
		}
	}
	fdb, err := remoteFDB(l)
	if err != nil {
		return nil, nil, err
	}
	for _, n := range fdb {
		if slices.Contains(dsts, remoteOf(n)) {
			continue
		}
		if err := netlink.NeighDel(&n); err != nil && !errors.Is(err, unix.ENOENT) {
			return nil, removed, fmt.Errorf("link: remove peer %s (%s) from the forwarding database of %s: %w", remoteOf(n), n.HardwareAddr, name, err)
		}
	}
	for _, a := range dsts {
		if slices.Contains(have, a) {
			continue
		}
		if err := netlink.NeighAppend(entry(a)); err != nil && !errors.Is(err, unix.EEXIST) {
			return added, removed, fmt.Errorf("link: add peer %s to the flood list of %s: %w", a, name, err)
		}
		added = append(added, a)
	}
	return added, removed, nil
}

// PathTo is how this host reaches an address: the outgoing link, its MTU
// (the route's own MTU when it sets one lower) and the source address the
// kernel picks.
type PathTo struct {
	Dev string
	MTU int
	Src netip.Addr
}

// RouteTo looks up the path to dst in the routing tables.
func RouteTo(dst netip.Addr) (PathTo, error) {
	routes, err := netlink.RouteGet(net.IP(dst.AsSlice()))
	if err != nil || len(routes) == 0 {
		if err == nil {
			err = errors.New("no route")
		}
		return PathTo{}, fmt.Errorf("link: route to %s: %w", dst, err)
	}
	r := routes[0]
	l, err := netlink.LinkByIndex(r.LinkIndex)
	if err != nil {
		return PathTo{}, fmt.Errorf("link: route to %s: link %d: %w", dst, r.LinkIndex, err)
	}
	p := PathTo{Dev: l.Attrs().Name, MTU: l.Attrs().MTU}
	if r.MTU > 0 && r.MTU < p.MTU {
		p.MTU = r.MTU
	}
	if a, ok := netip.AddrFromSlice(r.Src); ok {
		p.Src = a.Unmap()
	}
	return p, nil
}

// IsLocalAddr reports whether a is an address of this host (on any link).
func IsLocalAddr(a netip.Addr) (bool, error) {
	_, err := LinkOf(a)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// LinkOf returns the link that holds address a; ErrNotFound when none does.
func LinkOf(a netip.Addr) (netlink.Link, error) {
	addrs, err := redump(func() ([]netlink.Addr, error) { return netlink.AddrList(nil, family(a)) })
	if err != nil {
		return nil, fmt.Errorf("link: list addresses: %w", err)
	}
	for _, x := range addrs {
		if p, ok := prefixOf(x.IPNet); ok && p.Addr().Unmap() == a.Unmap() {
			l, err := netlink.LinkByIndex(x.LinkIndex)
			if err != nil {
				return nil, fmt.Errorf("link: link %d: %w", x.LinkIndex, err)
			}
			return l, nil
		}
	}
	return nil, fmt.Errorf("link: no link has address %s: %w", a, ErrNotFound)
}
