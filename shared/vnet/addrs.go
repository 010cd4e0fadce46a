package vnet

import (
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/brouter/brouter/shared/config"
	"github.com/brouter/brouter/shared/names"
	"github.com/brouter/brouter/shared/state"
)

// brouter's own address allocator, for guests that get their addresses from
// their caller rather than by DHCP (CNI containers whose config names a
// network and no IPAM plugin). It hands out the addresses of the network's
// pool ([network.NAME.alloc], by default a part of each subnet that the
// DHCP range and the low addresses operators give VMs by hand are not in)
// that nothing else may use: not the network and broadcast addresses, not the
// gateway, not the DHCP range dnsmasq leases from, not a static DHCP host
// and not a [[network.NAME.port]]'s address, so containers and VMs on one
// network never collide, which a separate IPAM plugin cannot promise.
//
// Records live in state_dir/NAME/addrs (they must survive a restart of the
// runtime, as host-local's do):
//
//	ip/ADDR          an allocated address; its content is the owner
//	owner/OWNER      the owner's addresses, JSON
//	next4, next6     where the next search starts (a hint)
//
// An address is taken by creating its file with O_EXCL, so concurrent
// allocations never hand out one address twice and need no lock; every
// operation costs the same whatever the number of addresses allocated.

func (m *Manager) addrDir(network string) string {
	return filepath.Join(m.Config.StateDir, network, "addrs")
}

// records is the store of the owners' records (owner/OWNER) under an
// addrs directory. Like run_dir's records they are written atomically but
// not synced: they describe guests that a crash of the host takes away, and
// GC releases what is left.
func records(dir string) *state.Store { return state.NewVolatile(dir) }

func ownerRecord(owner string) string { return "owner/" + owner }

func addrFile(a netip.Addr) string { return strings.ReplaceAll(a.String(), ":", "_") }

// Allocate gives owner (e.g. a CNI attachment's host port name) one address
// of each of the network's subnets, or the addresses in want (the CNI "ips"
// capability). Allocating for an owner that has addresses returns those.
// The prefixes carry the subnet's length.
func (m *Manager) Allocate(n *config.Network, owner string, want []netip.Addr) ([]netip.Prefix, error) {
	if err := names.Interface(owner); err != nil {
		return nil, fmt.Errorf("vnet: allocate: owner: %w", err)
	}
	if !n.Subnet.IsValid() && !n.Subnet6.IsValid() {
		return nil, fmt.Errorf("vnet: network %s has no address to allocate from (mode %s); use an IPAM plugin", n.Name, n.Mode)
	}
	dir := m.addrDir(n.Name)
	had, err := m.owned(dir, owner)
	if err != nil {
		return nil, err
	}
	if len(had) > 0 {
		if m.allOwned(dir, owner, had) {
			return prefixes(n, had), nil
		}
		// An allocation that died midway: start again.
		if err := m.Release(n.Name, owner); err != nil {
			return nil, err
		}
	}
	for _, d := range []string{"ip", "owner"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return nil, fmt.Errorf("vnet: allocate: %w", err)
		}
	}
	fail := func(err error) ([]netip.Prefix, error) {
		_ = m.Release(n.Name, owner) // only what this owner took
		return nil, err
	}
	var got []netip.Addr
	if len(want) > 0 {
		for _, a := range want {
			got = append(got, a.Unmap())
		}
		// The owner's record first: a process killed midway leaves Release
		// a list of everything it may have taken.
		if err := records(dir).Write(ownerRecord(owner), got); err != nil {
			return fail(err)
		}
		for _, a := range got {
			if err := m.take(n, dir, owner, a); err != nil {
				return fail(err)
			}
		}
		return prefixes(n, got), nil
	}
	for _, sub := range []netip.Prefix{n.Subnet, n.Subnet6} {
		if !sub.IsValid() {
			continue
		}
		a, err := m.next(n, dir, owner, sub, got)
		if err != nil {
			return fail(err)
		}
		got = append(got, a)
	}
	return prefixes(n, got), nil
}

// allOwned reports whether owner holds every address in as.
func (m *Manager) allOwned(dir, owner string, as []netip.Addr) bool {
	for _, a := range as {
		if cur, err := os.ReadFile(filepath.Join(dir, "ip", addrFile(a))); err != nil || string(cur) != owner {
			return false
		}
	}
	return true
}

// claimAddrs records a guest's own addresses (a Xen vif's ip=, a CNI IPAM
// plugin's result) as taken by its port, so the allocator never hands them
// to a container; those it never hands out anyway (outside the subnets, in
// the DHCP range, reserved) are left alone. An address another port has is
// an error that changes nothing. Addresses the port had and no longer has
// are given back.
func (m *Manager) claimAddrs(n *config.Network, owner string, ips []netip.Addr) error {
	dir := m.addrDir(n.Name)
	had, err := m.owned(dir, owner)
	if err != nil {
		return err
	}
	var mine []netip.Addr
	for _, a := range ips {
		if a = a.Unmap(); reserved(n, a) == "" && !slices.Contains(mine, a) {
			mine = append(mine, a)
		}
	}
	if len(mine) == 0 && len(had) == 0 {
		return nil
	}
	for _, d := range []string{"ip", "owner"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return fmt.Errorf("vnet: %w", err)
		}
	}
	// The owner's record first, listing old and new: a process killed
	// midway leaves Release a list of everything it may have taken.
	all := slices.Clone(had)
	for _, a := range mine {
		if !slices.Contains(all, a) {
			all = append(all, a)
		}
	}
	if err := records(dir).Write(ownerRecord(owner), all); err != nil {
		return err
	}
	var took []netip.Addr
	for _, a := range mine {
		err := m.take(n, dir, owner, a)
		if errors.Is(err, errTaken) {
			cur, _ := os.ReadFile(filepath.Join(dir, "ip", addrFile(a)))
			if string(cur) == owner {
				continue
			}
			err = fmt.Errorf("vnet: port %s: address %s is in use by port %s on network %s", owner, a, cur, n.Name)
		}
		if err != nil {
			for _, t := range took {
				_ = os.Remove(filepath.Join(dir, "ip", addrFile(t)))
			}
			if len(had) == 0 {
				_ = records(dir).Remove(ownerRecord(owner))
			} else {
				_ = records(dir).Write(ownerRecord(owner), had)
			}
			return err
		}
		took = append(took, a)
	}
	for _, a := range had {
		if !slices.Contains(mine, a) {
			p := filepath.Join(dir, "ip", addrFile(a))
			if cur, err := os.ReadFile(p); err == nil && string(cur) == owner {
				_ = os.Remove(p)
			}
		}
	}
	if len(mine) == 0 {
		return records(dir).Remove(ownerRecord(owner))
	}
	return records(dir).Write(ownerRecord(owner), mine)
}

// Release frees owner's addresses; an owner without any is not an error.
func (m *Manager) Release(network, owner string) error {
	if err := names.Interface(owner); err != nil {
		return fmt.Errorf("vnet: release: owner: %w", err)
	}
	dir := m.addrDir(network)
	had, err := m.owned(dir, owner)
	if err != nil {
		return err
	}
	for _, a := range had {
		p := filepath.Join(dir, "ip", addrFile(a))
		if cur, err := os.ReadFile(p); err == nil && string(cur) == owner {
			if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("vnet: release %s: %w", a, err)
			}
		}
	}
	if err := os.Remove(filepath.Join(dir, "owner", "."+owner+".take")); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("vnet: release: %w", err)
	}
	return records(dir).Remove(ownerRecord(owner))
}

// Owners lists the owners that have addresses on the network (for GC).
func (m *Manager) Owners(network string) ([]string, error) {
	out, err := state.ListDir(filepath.Join(m.addrDir(network), "owner"), nil)
	if err != nil {
		return nil, fmt.Errorf("vnet: list address owners: %w", err)
	}
	return out, nil
}

// Addresses returns owner's addresses on the network (none: nil).
func (m *Manager) Addresses(n *config.Network, owner string) ([]netip.Prefix, error) {
	if err := names.Interface(owner); err != nil {
		return nil, fmt.Errorf("vnet: owner: %w", err)
	}
	had, err := m.owned(m.addrDir(n.Name), owner)
	return prefixes(n, had), err
}

func (m *Manager) owned(dir, owner string) ([]netip.Addr, error) {
	var as []netip.Addr
	if _, err := records(dir).Read(ownerRecord(owner), &as); err != nil {
		return nil, fmt.Errorf("vnet: addresses of %s: %w", owner, err)
	}
	return as, nil
}

func prefixes(n *config.Network, as []netip.Addr) []netip.Prefix {
	var out []netip.Prefix
	for _, a := range as {
		sub := n.Subnet
		if a.Is6() {
			sub = n.Subnet6
		}
		out = append(out, netip.PrefixFrom(a, sub.Bits()))
	}
	return out
}

// reserved reports why a of network n is not brouter's to hand out ("" if it is).
func reserved(n *config.Network, a netip.Addr) string {
	sub := n.Subnet
	gw := n.Gateway.Addr()
	if a.Is6() {
		sub, gw = n.Subnet6, n.Gateway6.Addr()
	}
	switch {
	case !sub.IsValid() || !sub.Contains(a):
		return "not in the network's subnets"
	case a == sub.Masked().Addr():
		return "the subnet's own address"
	case a == gw:
		return "the gateway"
	case a.Is4() && a == lastAddr(sub):
		return "the broadcast address"
	}
	if d := n.DHCP; d != nil {
		if a.Is4() && d.RangeStart.Compare(a) <= 0 && a.Compare(d.RangeEnd) <= 0 {
			return fmt.Sprintf("in the DHCP range %s-%s", d.RangeStart, d.RangeEnd)
		}
		for _, h := range d.Hosts {
			if h.IP == a || h.IP6 == a {
				return "a static DHCP host's"
			}
		}
	}
	if d := n.DHCP6; d.InRange(a) {
		return fmt.Sprintf("in the DHCPv6 range %s-%s", d.RangeStart, d.RangeEnd)
	}
	for _, p := range n.PortRules {
		if slices.Contains(p.IPs, a) {
			return "a configured port's"
		}
	}
	return ""
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// errTaken: another owner has the address.
var errTaken = errors.New("is taken")

// take claims address a for owner. The address file appears with its owner
// in it or not at all (a hard link of a file written first), so a process
// killed midway never leaves an address nobody can release.
func (m *Manager) take(n *config.Network, dir, owner string, a netip.Addr) error {
	if why := reserved(n, a); why != "" {
		return fmt.Errorf("vnet: network %s: address %s cannot be given to a guest: %s", n.Name, a, why)
	}
	tmp := filepath.Join(dir, "owner", "."+owner+".take")
	if err := os.WriteFile(tmp, []byte(owner), 0o644); err != nil {
		return fmt.Errorf("vnet: allocate %s: %w", a, err)
	}
	defer os.Remove(tmp)
	p := filepath.Join(dir, "ip", addrFile(a))
	err := os.Link(tmp, p)
	if errors.Is(err, fs.ErrExist) {
		cur, _ := os.ReadFile(p)
		return fmt.Errorf("vnet: network %s: address %s %w (by %s)", n.Name, a, errTaken, cur)
	}
	if err != nil {
		return fmt.Errorf("vnet: allocate %s: %w", a, err)
	}
	return nil
}

// next claims the first free address of sub after the last one handed out,
// wrapping around once.
//
// Before taking a candidate it writes the owner's record as got plus the
// candidate, so a process killed right after the take leaves Release a
// record of it.
func (m *Manager) next(n *config.Network, dir, owner string, sub netip.Prefix, got []netip.Addr) (netip.Addr, error) {
	hint := filepath.Join(dir, "next4")
	if sub.Addr().Is6() {
		hint = filepath.Join(dir, "next6")
	}
	pool := n.Alloc.Pool(sub.Addr().Is6())
	if !pool.Start.IsValid() { // a Network not made by config.Validate
		pool = config.Pool{Start: sub.Masked().Addr().Next(), End: lastAddr(sub)}
	}
	start := pool.Start
	if b, err := os.ReadFile(hint); err == nil {
		if a, err := netip.ParseAddr(strings.TrimSpace(string(b))); err == nil && pool.Contains(a) {
			start = a
		}
	}

	// The pool is searched from the hint, at most 2^16 addresses: enough
	// to find a free one in any pool that is not almost full.
	const maxTries = 1 << 16
	first := pool.Start
	for a, i := start, 0; i < maxTries; i++ {
		if _, err := os.Lstat(filepath.Join(dir, "ip", addrFile(a))); err == nil {
			// taken: no need to try
		} else if reserved(n, a) == "" {
			if err := records(dir).Write(ownerRecord(owner), append(slices.Clone(got), a)); err != nil {
				return netip.Addr{}, err
			}
			err := m.take(n, dir, owner, a)
			if err == nil {
				_ = os.WriteFile(hint, []byte(a.Next().String()), 0o644)
				return a, nil
			}
			if !errors.Is(err, errTaken) {
				return netip.Addr{}, err
			}
		}
		if a = a.Next(); !a.IsValid() || !pool.Contains(a) {
			a = first // wrap around
		}
		if a == start {
			break
		}
	}
	return netip.Addr{}, fmt.Errorf("vnet: network %s: no free address left in the allocator's pool %s (outside the DHCP range and reserved addresses); widen [network.%s.alloc]", n.Name, pool, n.Name)
}

// poolWarnings names the guest addresses given by hand (port rules, the
// ip= of attached Xen vifs and other ports brouter did not create) that lie
// in the allocator's pool: a container may be handed one of them first, and
// the guest then fails to attach.
func (m *Manager) poolWarnings(n *config.Network) []string {
	var out []string
	inPool := func(a netip.Addr) (config.Pool, bool) {
		p := n.Alloc.Pool(a.Is6())
		return p, p.Contains(a)
	}
	for _, p := range n.PortRules {
		for _, a := range p.IPs {
			if pool, ok := inPool(a); ok {
				out = append(out, fmt.Sprintf("port rule %q: address %s is in the allocator's pool %s; a container may get it first (move it, or the pool: [network.%s.alloc])", p.Name, a, pool, n.Name))
			}
		}
	}
	names, _ := m.Records.List(portDir(n.Name))
	for _, f := range names {
		var pr portRecord
		if ok, err := m.Records.Read(portDir(n.Name)+"/"+f, &pr); err != nil || !ok || pr.Owned || pr.Guard == nil {
			continue
		}
		for _, a := range pr.Guard.IPs {
			if pool, ok := inPool(a); ok {
				out = append(out, fmt.Sprintf("port %s: address %s is in the allocator's pool %s; a container may get it first (move it, or the pool: [network.%s.alloc])", pr.Port, a, pool, n.Name))
			}
		}
	}
	return out
}
